//! Signals, as Linux delivers them on x86-64: handlers installed with `rt_sigaction`, a mask and
//! a set of pending signals per thread, an alternate signal stack per thread, and delivery by
//! building an `rt_sigframe` on the thread's stack and returning into the handler; the handler's
//! `ret` lands in the restorer (musl's and Go's call `rt_sigreturn`), which puts every register
//! back from that frame.
//!
//! Where signals come from: a fault of the program (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP;
//! fault.rs), and `kill`/`tkill`/`tgkill` aimed at the program itself. A signal sent to a thread
//! is delivered on its next way back to the program (the end of a system call or an interrupt);
//! a thread waiting in a futex or a sleep is woken with -EINTR first. A signal without a handler
//! takes its default action: most end the program ("killed by signal N", reported to the VMM),
//! a few are ignored. There is no stop and continue (one process, no job control).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::console;
use crate::cpu::{out32, FpuState};
use crate::entry::{UserFrame, USER_RFLAGS};
use crate::errno::{SysResult, EFAULT, EINTR, EINVAL, ENOMEM, EPERM, ESRCH};
use crate::process::PID;
use crate::sched::{self, State, Wakeups, SCHED};
use crate::sync::SpinLock;
use crate::{percpu, user};
use cvm_guest_abi::{fault_kind, port, FaultReport};

pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGKILL: u32 = 9;
pub const SIGSEGV: u32 = 11;
const SIGCHLD: u32 = 17;
const SIGCONT: u32 = 18;
const SIGSTOP: u32 = 19;
const SIGTSTP: u32 = 20;
const SIGTTIN: u32 = 21;
const SIGTTOU: u32 = 22;
const SIGURG: u32 = 23;
const SIGWINCH: u32 = 28;

const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;

const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;

const SS_ONSTACK: u64 = 1;
const SS_DISABLE: u64 = 2;
const MIN_SIGNAL_STACK: u64 = 2048;

/// `siginfo.si_code` values.
pub mod code {
    pub const SI_USER: i32 = 0;
    pub const SI_TKILL: i32 = -6;
    pub const SI_KERNEL: i32 = 0x80;
    pub const SEGV_MAPERR: i32 = 1;
    pub const SEGV_ACCERR: i32 = 2;
    pub const ILL_ILLOPN: i32 = 2;
    pub const FPE_INTDIV: i32 = 1;
    pub const BUS_ADRERR: i32 = 2;
    pub const TRAP_BRKPT: i32 = 1;
}

/// Signals no mask can hold back and no handler can catch.
const UNBLOCKABLE: u64 = bit(SIGKILL) | bit(SIGSTOP);

const fn bit(signal: u32) -> u64 {
    1 << (signal - 1)
}

/// The kernel's `struct sigaction` on x86-64: handler, flags, restorer, mask.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Action {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

/// Per thread (by scheduler slot): what `sigaltstack` set, and the details of pending signals.
#[derive(Clone, Copy)]
struct ThreadSignals {
    /// The alternate stack: sp, unused, size; size 0 when there is none (SS_DISABLE), so that
    /// the table is all zeros at boot.
    alt_stack: [u64; 3],
    /// si_code of each pending signal (the last one sent).
    codes: [i32; 64],
}

/// `repr(C)`: the actions and the first thread's entry share the table's first page.
#[repr(C)]
struct Signals {
    actions: [Action; 64],
    threads: [ThreadSignals; crate::sched::MAX_THREADS],
}

static SIGNALS: SpinLock<Signals> = SpinLock::new(Signals {
    actions: [Action { handler: 0, flags: 0, restorer: 0, mask: 0 }; 64],
    threads: [ThreadSignals { alt_stack: [0; 3], codes: [0; 64] }; crate::sched::MAX_THREADS],
});

/// Signals sent to the process while every thread blocked them: the first thread that lets
/// one through takes it (bit n-1: signal n), as Linux's shared pending set.
#[link_section = ".data.hot"]
static PROCESS_PENDING: AtomicU64 = AtomicU64::new(0);

pub fn process_pending() -> u64 {
    PROCESS_PENDING.load(Ordering::Acquire)
}

/// How many signals are pending in all threads: the way back to the program looks no further
/// when it is zero (nearly always).
#[link_section = ".data.hot"]
static PENDING: AtomicU32 = AtomicU32::new(0);

fn valid(signal: u64) -> Result<u32, crate::errno::Errno> {
    if (1..=64).contains(&signal) {
        Ok(signal as u32)
    } else {
        Err(EINVAL)
    }
}

/// What a signal without a handler does.
fn ignored_by_default(signal: u32) -> bool {
    matches!(signal, SIGCHLD | SIGURG | SIGWINCH | SIGCONT | SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU)
}

pub fn rt_sigaction(signal: u64, new: u64, old: u64, mask_size: u64) -> SysResult {
    let signal = valid(signal)?;
    if mask_size != 8 {
        return Err(EINVAL);
    }
    if new != 0 && bit(signal) & UNBLOCKABLE != 0 {
        return Err(EINVAL);
    }
    let requested = if new != 0 { Some(user::read::<Action>(new)?) } else { None };
    let slot = (signal - 1) as usize;
    let previous = SIGNALS.with(|signals| signals.actions[slot]);
    user::write_optional(old, previous)?;
    if let Some(mut action) = requested {
        action.mask &= !UNBLOCKABLE;
        SIGNALS.with(|signals| signals.actions[slot] = action);
    }
    Ok(0)
}

const SIG_BLOCK: u64 = 0;
const SIG_UNBLOCK: u64 = 1;
const SIG_SETMASK: u64 = 2;

/// The calling thread's mask. A signal it unblocks that is pending is delivered on the way back.
pub fn rt_sigprocmask(how: u64, new: u64, old: u64, mask_size: u64) -> SysResult {
    if mask_size != 8 {
        return Err(EINVAL);
    }
    let requested = if new != 0 { Some(user::read::<u64>(new)?) } else { None };
    if requested.is_some() && !matches!(how, SIG_BLOCK | SIG_UNBLOCK | SIG_SETMASK) {
        return Err(EINVAL);
    }
    let cpu = percpu::current_cpu();
    let previous = SCHED.with(|sched| {
        let thread = sched.current(cpu);
        let t = &mut sched.threads[thread];
        let previous = t.signal_mask;
        if let Some(set) = requested {
            let mask = match how {
                SIG_BLOCK => previous | set,
                SIG_UNBLOCK => previous & !set,
                _ => set,
            };
            t.signal_mask = mask & !UNBLOCKABLE;
        }
        previous
    });
    user::write_optional(old, previous)?;
    Ok(0)
}

/// Pending signals of the calling thread that its mask holds back.
pub fn rt_sigpending(set: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let cpu = percpu::current_cpu();
    let pending = SCHED.with(|sched| sched.threads[sched.current(cpu)].signal_pending) | process_pending();
    user::write(set, pending)?;
    Ok(0)
}

fn on_alt_stack(alt: &[u64; 3], sp: u64) -> bool {
    alt[2] != 0 && sp > alt[0] && sp - alt[0] <= alt[2]
}

/// The alternate stack as `stack_t` reports it.
fn reported(alt: [u64; 3]) -> [u64; 3] {
    if alt[2] == 0 {
        [0, SS_DISABLE, 0]
    } else {
        [alt[0], 0, alt[2]]
    }
}

pub fn sigaltstack(frame: &UserFrame, new: u64, old: u64) -> SysResult {
    let requested = if new != 0 { Some(user::read::<[u64; 3]>(new)?) } else { None };
    let thread = SCHED.with(|sched| sched.current(percpu::current_cpu()));
    let current = SIGNALS.with(|signals| signals.threads[thread].alt_stack);
    let on_it = on_alt_stack(&current, frame.rsp);
    let mut report = reported(current);
    if on_it {
        report[1] |= SS_ONSTACK;
    }
    user::write_optional(old, report)?;
    if let Some([sp, flags, size]) = requested {
        if on_it {
            return Err(EPERM);
        }
        let stack = if flags & SS_DISABLE != 0 {
            [0; 3]
        } else if flags & !SS_ONSTACK != 0 {
            return Err(EINVAL);
        } else if size < MIN_SIGNAL_STACK {
            return Err(ENOMEM);
        } else {
            [sp, 0, size]
        };
        SIGNALS.with(|signals| signals.threads[thread].alt_stack = stack);
    }
    Ok(0)
}

/// A new thread starts with no alternate stack and nothing pending (its mask is its parent's:
/// sched.rs copies it).
pub fn thread_created(thread: usize) {
    SIGNALS.with(|signals| signals.threads[thread] = ThreadSignals { alt_stack: [0; 3], codes: [0; 64] });
}

/// `kill(pid, sig)`, `tkill(tid, sig)`, `tgkill(pid, tid, sig)`: only this program (pid 1, or
/// 0 and -1: every process we may signal) and its threads can be targets.
pub fn kill(target: u64, signal: u64, to_thread: bool) -> SysResult {
    let target = target as i64;
    if signal > 64 || (to_thread && target <= 0) {
        return Err(EINVAL);
    }
    let cpu = percpu::current_cpu();
    let slot = SCHED.with(|sched| {
        let live = |t: usize| sched.threads[t].state != State::Free;
        if to_thread {
            sched.used().find(|&t| live(t) && i64::from(sched.threads[t].tid) == target).map(Some)
        } else if target == PID as i64 || target == 0 || target == -1 {
            // To the process: the caller if it lets the signal through, else a thread that
            // does, else (None inside) the process's own pending set.
            let lets_through = |t: usize| live(t) && sched.threads[t].signal_mask & bit_of(signal) == 0;
            let caller = sched.current(cpu);
            Some(if lets_through(caller) { Some(caller) } else { sched.used().find(|&t| lets_through(t)) })
        } else {
            None
        }
    });
    let target_thread = slot.ok_or(ESRCH)?;
    if signal == 0 {
        return Ok(0);
    }
    let Some(thread) = target_thread else {
        // Every thread blocks it: it waits for the process, not for one thread.
        let signal = signal as u32;
        if signal == SIGKILL {
            terminate(signal);
        }
        if PROCESS_PENDING.fetch_or(bit(signal), Ordering::AcqRel) & bit(signal) == 0 {
            PENDING.fetch_add(1, Ordering::AcqRel);
        }
        return Ok(0);
    };
    let signal = signal as u32;
    if signal == SIGKILL {
        terminate(signal);
    }
    let action = SIGNALS.with(|signals| signals.actions[(signal - 1) as usize]);
    if action.handler == SIG_IGN || (action.handler == SIG_DFL && ignored_by_default(signal)) {
        return Ok(0); // discarded at once, as Linux does
    }
    let si_code = if to_thread { code::SI_TKILL } else { code::SI_USER };
    SIGNALS.with(|signals| signals.threads[thread].codes[(signal - 1) as usize] = si_code);
    let mut wakeups = Wakeups::default();
    let mut interrupt = None;
    SCHED.with(|sched| {
        let running_on = sched.cpu_running(thread);
        let t = &mut sched.threads[thread];
        if t.signal_pending & bit(signal) == 0 {
            t.signal_pending |= bit(signal);
            PENDING.fetch_add(1, Ordering::AcqRel);
        }
        if t.signal_mask & bit(signal) != 0 {
            return;
        }
        if t.state == State::Blocked {
            // A thread waiting in the kernel stops waiting (-EINTR); a sleep says what was left.
            let left = t.deadline.saturating_sub(crate::clock::monotonic_ns());
            let result = sched::interrupted(t.sleep_remaining, left);
            sched.make_runnable(thread, result, &mut wakeups);
        } else if let Some(other) = running_on.filter(|&other| other != cpu) {
            // Running on another vCPU, perhaps never entering the kernel: interrupt it there.
            interrupt = Some(other);
        }
    });
    wakeups.send();
    if let Some(other) = interrupt {
        out32(port::INTERRUPT, other as u32);
    }
    Ok(0)
}

fn bit_of(signal: u64) -> u64 {
    if (1..=64).contains(&signal) {
        bit(signal as u32)
    } else {
        0
    }
}

/// `rt_sigsuspend(mask)`: waits with `mask` in place until a handler has run; the handler's
/// frame keeps the mask from before, so `rt_sigreturn` puts it back. Always -EINTR.
pub fn rt_sigsuspend(frame: &mut UserFrame, cpu: usize, set: u64, size: u64) {
    let mask = match (size, user::read::<u64>(set)) {
        (8, Ok(mask)) => mask & !UNBLOCKABLE,
        (8, Err(errno)) => return frame.rax = (-i64::from(errno.0)) as u64,
        _ => return frame.rax = (-i64::from(EINVAL.0)) as u64,
    };
    let mut sched = SCHED.lock();
    let thread = sched.current(cpu);
    let t = &mut sched.threads[thread];
    t.saved_mask = Some(t.signal_mask);
    t.signal_mask = mask;
    if sched.signal_waiting(cpu) {
        frame.rax = (-i64::from(EINTR.0)) as u64;
        return;
    }
    sched.block_current(cpu, frame, 0, 0, u64::MAX, 0);
    sched::run_next(sched, cpu, frame);
}

/// On every way back to the program: the thread now in `frame` (on `cpu`) gets its lowest
/// pending unblocked signal, if it has one; a handled one changes `frame` to enter the handler.
pub fn deliver_pending(frame: &mut UserFrame, cpu: usize) {
    if PENDING.load(Ordering::Acquire) == 0 {
        return;
    }
    loop {
        let taken = SCHED.with(|sched| {
            let thread = sched.current(cpu);
            let t = &mut sched.threads[thread];
            let own = t.signal_pending & !t.signal_mask;
            let shared = PROCESS_PENDING.load(Ordering::Acquire) & !t.signal_mask;
            let ready = own | shared;
            if ready == 0 {
                return None;
            }
            let signal = ready.trailing_zeros() + 1;
            if own & bit(signal) != 0 {
                t.signal_pending &= !bit(signal);
            } else if PROCESS_PENDING.fetch_and(!bit(signal), Ordering::AcqRel) & bit(signal) == 0 {
                return None; // another thread took it first (this runs under the lock: never)
            }
            PENDING.fetch_sub(1, Ordering::AcqRel);
            // After rt_sigsuspend the frame keeps the mask from before it.
            let saved = t.saved_mask.take().unwrap_or(t.signal_mask);
            Some((thread, signal, t.signal_mask, saved))
        });
        let Some((thread, signal, mask, saved)) = taken else { return };
        let (action, si_code) = SIGNALS.with(|signals| {
            (signals.actions[(signal - 1) as usize], signals.threads[thread].codes[(signal - 1) as usize])
        });
        match action.handler {
            SIG_IGN => continue,
            SIG_DFL if ignored_by_default(signal) => continue,
            SIG_DFL => terminate(signal),
            _ => {
                let info = SigInfo::sent(signal, si_code);
                if enter_handler(frame, cpu, thread, signal, &action, Masks { now: mask, saved }, &info).is_err() {
                    terminate(SIGSEGV);
                }
                return;
            }
        }
    }
}

/// A fault of the program: true when its handler will run (`frame` now enters it); false when
/// the signal is blocked, ignored or has no handler, and the program must end.
pub fn deliver_fault(frame: &mut UserFrame, cpu: usize, signal: u32, si_code: i32, address: u64) -> bool {
    let (thread, mask) = SCHED.with(|sched| {
        let thread = sched.current(cpu);
        (thread, sched.threads[thread].signal_mask)
    });
    let action = SIGNALS.with(|signals| signals.actions[(signal - 1) as usize]);
    if matches!(action.handler, SIG_DFL | SIG_IGN) || mask & bit(signal) != 0 {
        return false;
    }
    let info = SigInfo::fault(signal, si_code, address);
    enter_handler(frame, cpu, thread, signal, &action, Masks { now: mask, saved: mask }, &info).is_ok()
}

/// `siginfo_t`, 128 bytes; only the fields this kernel fills.
#[repr(C)]
#[derive(Clone, Copy)]
struct SigInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    /// si_addr for faults; si_pid (low half) and si_uid (high half) for kill.
    first: u64,
    rest: [u64; 13],
}

impl SigInfo {
    fn sent(signal: u32, si_code: i32) -> SigInfo {
        SigInfo { signo: signal as i32, errno: 0, code: si_code, _pad: 0, first: PID, rest: [0; 13] }
    }

    fn fault(signal: u32, si_code: i32, address: u64) -> SigInfo {
        SigInfo { signo: signal as i32, errno: 0, code: si_code, _pad: 0, first: address, rest: [0; 13] }
    }
}

/// `struct sigcontext` on x86-64 (uc_mcontext), 256 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SigContext {
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rax: u64,
    rcx: u64,
    rsp: u64,
    rip: u64,
    eflags: u64,
    /// cs, gs, fs, ss (16 bits each).
    segments: u64,
    err: u64,
    trapno: u64,
    oldmask: u64,
    cr2: u64,
    fpstate: u64,
    reserved: [u64; 8],
}

/// The kernel's `struct ucontext` (what the handler's third argument points at).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UContext {
    flags: u64,
    link: u64,
    stack: [u64; 3],
    mcontext: SigContext,
    sigmask: u64,
}

/// What goes on the stack, lowest address first; the handler starts with RSP at `restorer`,
/// as if called from there.
#[repr(C)]
#[derive(Clone, Copy)]
struct SigFrame {
    restorer: u64,
    context: UContext,
    info: SigInfo,
}

const _: () = assert!(core::mem::size_of::<SigInfo>() == 128);
const _: () = assert!(core::mem::size_of::<SigContext>() == 256);
const _: () = assert!(core::mem::size_of::<UContext>() == 304);

/// Below the interrupted stack pointer: the red zone the program may be using.
const RED_ZONE: u64 = 128;
/// RFLAGS bits a signal frame may set on return: the arithmetic flags, DF, AC and RF (not TF,
/// IF or IOPL).
const RESTORABLE_FLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000;

/// The thread's mask now (what the handler's mask adds to) and the one its frame keeps for
/// `rt_sigreturn` (different after `rt_sigsuspend`).
struct Masks {
    now: u64,
    saved: u64,
}

fn enter_handler(
    frame: &mut UserFrame,
    cpu: usize,
    thread: usize,
    signal: u32,
    action: &Action,
    masks: Masks,
    info: &SigInfo,
) -> Result<(), crate::errno::Errno> {
    if action.flags & SA_RESTORER == 0 {
        return Err(EFAULT); // x86-64 has no other way back from a handler
    }
    let alt = SIGNALS.with(|signals| signals.threads[thread].alt_stack);
    let mut sp = frame.rsp;
    if action.flags & SA_ONSTACK != 0 && alt[2] != 0 && !on_alt_stack(&alt, sp) {
        sp = alt[0] + alt[2];
    } else {
        sp = sp.wrapping_sub(RED_ZONE);
    }
    let fpstate = (sp.wrapping_sub(512)) & !63;
    let frame_at = ((fpstate.wrapping_sub(core::mem::size_of::<SigFrame>() as u64)) & !15) - 8;

    let mut fpu = FpuState::initial();
    fpu.save();
    user::write(fpstate, fpu)?;
    let context = UContext {
        flags: 0,
        link: 0,
        stack: reported(alt),
        mcontext: SigContext {
            r8: frame.r8,
            r9: frame.r9,
            r10: frame.r10,
            r11: frame.r11,
            r12: frame.r12,
            r13: frame.r13,
            r14: frame.r14,
            r15: frame.r15,
            rdi: frame.rdi,
            rsi: frame.rsi,
            rbp: frame.rbp,
            rbx: frame.rbx,
            rdx: frame.rdx,
            rax: frame.rax,
            rcx: frame.rcx,
            rsp: frame.rsp,
            rip: frame.rip,
            eflags: frame.rflags,
            segments: frame.cs | frame.ss << 48,
            err: if frame.vector < 32 { frame.error_code } else { 0 },
            trapno: if frame.vector < 32 { frame.vector } else { 0 },
            oldmask: masks.saved,
            cr2: if info.code > 0 { info.first } else { 0 },
            fpstate,
            reserved: [0; 8],
        },
        sigmask: masks.saved,
    };
    user::write(frame_at, SigFrame { restorer: action.restorer, context, info: *info })?;

    frame.rip = action.handler;
    frame.rsp = frame_at;
    frame.rdi = u64::from(signal);
    frame.rsi = frame_at + core::mem::offset_of!(SigFrame, info) as u64;
    frame.rdx = frame_at + core::mem::offset_of!(SigFrame, context) as u64;
    frame.rax = 0;
    frame.rflags = USER_RFLAGS | (frame.rflags & RESTORABLE_FLAGS & !0x400); // DF clear, as the ABI wants
    frame.vector = crate::entry::SYSCALL_VECTOR;
    let mut blocked = masks.now | action.mask;
    if action.flags & SA_NODEFER == 0 {
        blocked |= bit(signal);
    }
    SCHED.with(|sched| sched.threads[sched.current(cpu)].signal_mask = blocked & !UNBLOCKABLE);
    if action.flags & SA_RESETHAND != 0 {
        SIGNALS.with(|signals| signals.actions[(signal - 1) as usize] = Action::default());
    }
    Ok(())
}

/// `rt_sigreturn`: back to where the signal interrupted the thread, with the registers, SSE
/// state and mask saved in the frame (which the handler may have changed; only what the
/// program may set is taken).
pub fn rt_sigreturn(frame: &mut UserFrame, cpu: usize) {
    // The handler's `ret` popped the restorer address: RSP points at the ucontext.
    let Ok(context) = user::read::<UContext>(frame.rsp) else { terminate(SIGSEGV) };
    let m = &context.mcontext;
    if m.fpstate != 0 {
        let Ok(mut fpu) = user::read::<FpuState>(m.fpstate) else { terminate(SIGSEGV) };
        // MXCSR bits above 15 are reserved: fxrstor would fault on them.
        fpu.0[26] = 0;
        fpu.0[27] = 0;
        fpu.restore();
    }
    *frame = UserFrame {
        r15: m.r15,
        r14: m.r14,
        r13: m.r13,
        r12: m.r12,
        rbp: m.rbp,
        rbx: m.rbx,
        r11: m.r11,
        r10: m.r10,
        r9: m.r9,
        r8: m.r8,
        rax: m.rax,
        rcx: m.rcx,
        rdx: m.rdx,
        rsi: m.rsi,
        rdi: m.rdi,
        vector: crate::entry::SYSCALL_VECTOR,
        error_code: 0,
        rip: m.rip,
        ..UserFrame::starting(m.rip, m.rsp)
    };
    frame.rflags = USER_RFLAGS | (m.eflags & RESTORABLE_FLAGS);
    SCHED.with(|sched| sched.threads[sched.current(cpu)].signal_mask = context.sigmask & !UNBLOCKABLE);
}

/// The default action of a signal that ends the program: every vCPU stops, and the VMM
/// records "killed by signal" with exit status 128 + signal.
pub fn terminate(signal: u32) -> ! {
    let report = FaultReport { kind: fault_kind::SIGNALED, signal, ..Default::default() };
    if crate::qemu_mode() {
        console::serial_write(b"cvm-guest: the program was killed by a signal\n");
        out32(port::EXIT, crate::exit_port_value(128 + signal));
    } else {
        crate::fault::report(report);
    }
    crate::cpu::spin_forever()
}
