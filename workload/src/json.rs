//! A tiny JSON object writer: the workload stays free of serialization crates.

pub struct JsonObject {
    fields: Vec<String>,
}

impl JsonObject {
    pub fn new(workload: &str) -> Self {
        let mut object = JsonObject { fields: Vec::new() };
        object.str("workload", workload);
        object
    }

    pub fn int(&mut self, key: &str, value: u64) {
        self.fields.push(format!("\"{key}\":{value}"));
    }

    pub fn float(&mut self, key: &str, value: f64) {
        let text = if value.is_finite() { format!("{value:.3}") } else { "null".into() };
        self.fields.push(format!("\"{key}\":{text}"));
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.fields.push(format!("\"{key}\":{}", quote(value)));
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.str(key, value),
            None => self.fields.push(format!("\"{key}\":null")),
        }
    }

    pub fn opt_int(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(value) => self.int(key, value),
            None => self.fields.push(format!("\"{key}\":null")),
        }
    }

    pub fn str_list(&mut self, key: &str, values: &[String]) {
        let items: Vec<String> = values.iter().map(|v| quote(v)).collect();
        self.fields.push(format!("\"{key}\":[{}]", items.join(",")));
    }

    pub fn finish(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
