//! `cvm image bundle NAME DIR`: an OCI runtime bundle, what runc, crun and youki run: DIR/rootfs
//! (the image's layers applied in order into one folder) and DIR/config.json (the runtime
//! spec: the program, its environment, namespaces, mounts, capabilities and limits, set as
//! `runc spec` and cvm's own container set them). The peers runc and crun run bundles written
//! with the same config (`src/peers/bundle.rs`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::layer::{self, Whiteouts};
use super::reference::Reference;
use super::store::Store;
use super::Image;

/// The capabilities a container keeps (runc's defaults, cvm's container's too).
const CAPABILITIES: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// Writes the bundle of `reference` into `dir` (which must not exist yet, or be empty).
pub fn bundle(store: &Store, reference: &Reference, dir: &Path, args: &[String]) -> Result<Image> {
    let images = store.images()?;
    let image = Image::find(&images, reference)?;
    let argv = image.config.argv(args);
    if argv.is_empty() {
        bail!("the image {reference} has no entrypoint or command: give the program to run after the folder");
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: give a new folder for the bundle", dir.display());
    }
    let rootfs = dir.join("rootfs");
    {
        use std::os::unix::fs::DirBuilderExt;
        // Private: the image's set-user-id programs must not be runnable by other users of the
        // host from the bundle.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::create_dir(&rootfs).with_context(|| format!("cannot create {}", rootfs.display()))?;
    }
    let result = (|| -> Result<()> {
        for (blob, diff_id) in image.manifest.layers.iter().zip(&image.config.rootfs.diff_ids) {
            layer::unpack(&images, blob, diff_id, &rootfs, Whiteouts::Apply)?;
        }
        for mount_point in ["proc", "dev", "sys"] {
            std::fs::create_dir_all(rootfs.join(mount_point))?;
        }
        let program = &argv[0];
        let found = super::tree::Tree { layers: vec![rootfs.clone()] }.resolve(program);
        if found.is_none_or(|entry| entry.kind != super::tree::Kind::File) {
            bail!("the image {reference} has no program {program} to run");
        }
        let spec = runtime_spec(&image, &argv);
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)
            .with_context(|| format!("cannot write {}", dir.join("config.json").display()))
    })();
    if result.is_err() {
        let _ = layer::remove_any(&rootfs);
        let _ = std::fs::remove_file(dir.join("config.json"));
    }
    result.map(|()| image)
}

/// config.json of the OCI runtime spec for `image` with its root file system in `rootfs`.
fn runtime_spec(image: &Image, argv: &[String]) -> serde_json::Value {
    let env = image.config.config.env.clone().unwrap_or_else(|| vec![super::build::DEFAULT_PATH.to_string()]);
    let cwd = image.config.config.working_dir.clone().filter(|d| d.starts_with('/')).unwrap_or_else(|| "/".into());
    let root = BundleRoot { path: "rootfs".into(), readonly: false, hostname: "cvm-bundle".into() };
    let annotations = json!({
        "org.opencontainers.image.ref.name": image.reference.to_string(),
        "org.opencontainers.image.manifest.digest": image.digest().to_string(),
    });
    runtime_config(argv, &env, &cwd, &root, annotations)
}

/// Where a bundle's root file system is and how it is mounted.
pub struct BundleRoot {
    /// Relative to the bundle, or absolute.
    pub path: String,
    pub readonly: bool,
    pub hostname: String,
}

/// config.json of the OCI runtime spec, version 1.0.2: the program, its environment,
/// namespaces, mounts, capabilities and limits, as `runc spec` and cvm's own container set them.
pub fn runtime_config(
    argv: &[String],
    env: &[String],
    cwd: &str,
    bundle_root: &BundleRoot,
    annotations: serde_json::Value,
) -> serde_json::Value {
    // SAFETY: geteuid/getuid/getgid have no preconditions.
    let (root, uid, gid) = unsafe { (libc::geteuid() == 0, libc::getuid(), libc::getgid()) };
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "network"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut linux = json!({
        "namespaces": [],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    });
    if root {
        linux["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    } else {
        // Rootless, as `runc spec --rootless` writes it: your user is root inside.
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    }
    linux["namespaces"] = json!(namespaces);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": bundle_root.path, "readonly": bundle_root.readonly},
        "hostname": bundle_root.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": if root { "sysfs" } else { "bind" }, "source": if root { "sysfs" } else { "/sys" },
             "options": if root { json!(["nosuid", "noexec", "nodev", "ro"]) } else { json!(["rbind", "nosuid", "noexec", "nodev", "ro"]) }}
        ],
        "linux": linux,
        "annotations": annotations
    })
}
