//! Threads and the scheduler: which thread runs on which vCPU, and what the others wait for.
//!
//! A thread that is not running is nothing but its saved registers (a [`UserFrame`]), its
//! SSE state and a few words of bookkeeping: this kernel never blocks inside itself. A system
//! call that has to wait (a futex, a sleep, `sched_yield`) saves the caller's frame in its
//! thread, and the vCPU goes on with another thread's frame, copied over the one on its stack;
//! the common exit path in entry.rs then returns into that thread. When the waiting thread is
//! woken, whoever wakes it writes its system call's result into its saved RAX and queues it.
//! So one small stack per vCPU is enough, and a switch is a copy of 176 bytes plus FXSAVE.
//!
//! One lock guards it all. A vCPU with nothing to run parks in the VMM (port SLEEP) until the
//! earliest deadline of a sleeping thread; a vCPU that makes a thread runnable while another
//! vCPU is parked wakes that one (port WAKE). A thread keeps its vCPU until it waits, exits,
//! or its time slice ends while others are queued: then the vCPU's one-shot timer (port TIMER,
//! interrupt 0x20) preempts it. The timer is armed only when it has work to do, so a program
//! with as many threads as vCPUs takes no interrupt at all.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use cvm_guest_abi::{port, MAX_CPUS};

use crate::clock::monotonic_ns;
use crate::cpu::{self, out32, FpuState};
use crate::entry::{first_frame_address, return_to_user, UserFrame};
use crate::errno::EINTR;
use crate::percpu;
use crate::process;
use crate::sync::{SpinGuard, SpinLock};

/// Most threads a program may have at once.
pub const MAX_THREADS: usize = 256;
/// How long a thread runs before another queued one gets the vCPU.
const SLICE_NS: u64 = 10_000_000;
/// Never park a vCPU for more than this at once (a bound, not a tick: the VMM still wakes it
/// early for a WAKE, a deadline or Ctrl-C).
const LONGEST_PARK_US: u64 = 1_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Free,
    Runnable,
    Running,
    /// Waiting: on a futex word (`futex` != 0), or just for its deadline.
    Blocked,
}

#[derive(Clone, Copy)]
pub struct Thread {
    pub state: State,
    pub tid: u32,
    pub frame: UserFrame,
    pub fpu: FpuState,
    pub fs_base: u64,
    /// CLONE_CHILD_CLEARTID / set_tid_address: zeroed and futex-woken when the thread exits.
    pub clear_child_tid: u64,
    /// The futex word it waits on (0: none) and the bitset it waits for.
    pub futex: u64,
    pub futex_bitset: u32,
    /// When the wait ends anyway, in monotonic ns (u64::MAX: never).
    pub deadline: u64,
    /// RAX when the deadline ends the wait (0 for a sleep, -ETIMEDOUT for a futex).
    pub timeout_result: u64,
    /// When it started waiting, so futex wakes go first-come first-served.
    pub wait_seq: u64,
    /// Signals it holds back, and signals sent to it not yet delivered (bit n-1: signal n).
    pub signal_mask: u64,
    pub signal_pending: u64,
    /// While it sleeps in nanosleep: where to write the time left if a signal cuts it short.
    pub sleep_remaining: u64,
    /// rt_sigsuspend: the mask to put back once the handler has run (None: not suspended).
    pub saved_mask: Option<u64>,
    /// Woken with [`RESTART_SYSCALL`], it runs its system call again instead of returning.
    pub restartable: bool,
}

impl Thread {
    /// All zeros, so the table lands in .bss: the VMM copies no page of it, and the guest
    /// kernel's memory counts only the slots threads use.
    const FREE: Thread = Thread {
        state: State::Free,
        tid: 0,
        frame: UserFrame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            vector: 0,
            error_code: 0,
            rip: 0,
            cs: 0,
            rflags: 0,
            rsp: 0,
            ss: 0,
        },
        fpu: FpuState([0; 512]),
        fs_base: 0,
        clear_child_tid: 0,
        futex: 0,
        futex_bitset: 0,
        deadline: 0,
        timeout_result: 0,
        wait_seq: 0,
        signal_mask: 0,
        signal_pending: 0,
        sleep_remaining: 0,
        saved_mask: None,
        restartable: false,
    };
}

/// A FIFO of thread slots.
struct RunQueue {
    slots: [u16; MAX_THREADS],
    head: usize,
    len: usize,
}

impl RunQueue {
    fn push(&mut self, thread: usize) {
        // Never full: a thread is queued at most once and there are MAX_THREADS of them.
        let tail = (self.head + self.len) % MAX_THREADS;
        self.slots[tail] = thread as u16;
        self.len += 1;
        QUEUED.store(self.len, Ordering::Release);
    }

    fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let thread = self.slots[self.head] as usize;
        self.head = (self.head + 1) % MAX_THREADS;
        self.len -= 1;
        QUEUED.store(self.len, Ordering::Release);
        Some(thread)
    }
}

/// `repr(C)`, the small fields first and the threads last: the fields every system call reads
/// and the first thread share the table's first page.
#[repr(C)]
pub struct Scheduler {
    queue: RunQueue,
    current: [Option<usize>; MAX_CPUS],
    idle: [bool; MAX_CPUS],
    /// The absolute time each vCPU's timer is armed for (0: not armed).
    armed: [u64; MAX_CPUS],
    /// Slots above this were never used: scans stop here.
    high_water: usize,
    live: usize,
    next_tid: u32,
    next_seq: u64,
    have_fsgsbase: bool,
    pub threads: [Thread; MAX_THREADS],
}

pub static SCHED: SpinLock<Scheduler> = SpinLock::new(Scheduler {
    queue: RunQueue { slots: [0; MAX_THREADS], head: 0, len: 0 },
    current: [None; MAX_CPUS],
    idle: [false; MAX_CPUS],
    armed: [0; MAX_CPUS],
    high_water: 0,
    live: 0,
    next_tid: 0,
    next_seq: 0,
    have_fsgsbase: false,
    threads: [Thread::FREE; MAX_THREADS],
});

/// The "result" that makes a woken thread run its system call again (epoll.rs). Not a value
/// any system call returns (-1 is -EPERM; this is beyond -4095).
pub const RESTART_SYSCALL: u64 = u64::MAX - 0x1_0000;

/// When each vCPU's timer is armed for (0: not), readable without the lock.
#[link_section = ".data.hot"]
static ARMED_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Threads waiting for a vCPU (the run queue's length, readable without the lock).
#[link_section = ".data.hot"]
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// vCPUs to send a WAKE to once the lock is released (port writes are slow: never under it).
#[derive(Default)]
#[must_use]
pub struct Wakeups([bool; MAX_CPUS]);

impl Wakeups {
    pub fn send(self) {
        for (cpu, wake) in self.0.iter().enumerate() {
            if *wake {
                out32(port::WAKE, cpu as u32);
            }
        }
    }
}

impl Scheduler {
    /// The thread running on `cpu`.
    pub fn current(&self, cpu: usize) -> usize {
        self.current[cpu].unwrap_or(0)
    }

    pub fn current_tid(&self, cpu: usize) -> u32 {
        self.threads[self.current(cpu)].tid
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// The slots in use so far (for scans).
    pub fn used(&self) -> core::ops::Range<usize> {
        0..self.high_water
    }

    /// A new thread, not yet runnable. None when MAX_THREADS are alive.
    pub fn create(&mut self, frame: UserFrame, fpu: FpuState, fs_base: u64, signal_mask: u64) -> Option<usize> {
        let slot = self.threads.iter().position(|t| t.state == State::Free)?;
        self.next_tid += 1;
        let tid = process::PID as u32 + if self.live == 0 { 0 } else { self.next_tid };
        self.threads[slot] = Thread { state: State::Blocked, tid, frame, fpu, fs_base, signal_mask, ..Thread::FREE };
        self.high_water = self.high_water.max(slot + 1);
        self.live += 1;
        Some(slot)
    }

    /// The program's first thread, in slot 0 of the table that is still as the image left it
    /// (all zeros): only the fields that differ are written. Boot runs emulated on PVM hosts,
    /// where [`create`]'s whole-`Thread` copy (about 700 bytes, twice) cost 0.37 ms.
    fn create_first(&mut self, frame: UserFrame) -> usize {
        debug_assert!(self.live == 0 && self.threads[0].state == State::Free);
        let t = &mut self.threads[0];
        t.state = State::Blocked;
        t.tid = process::PID as u32;
        t.frame = frame;
        t.fpu.set_initial_controls();
        self.high_water = self.high_water.max(1);
        self.live = 1;
        0
    }

    /// Queues `thread` with `rax` as its pending system call's result; picks a parked vCPU to
    /// run it.
    pub fn make_runnable(&mut self, thread: usize, rax: u64, wakeups: &mut Wakeups) {
        let t = &mut self.threads[thread];
        if rax == RESTART_SYSCALL && t.restartable {
            // Back to the `syscall` instruction (2 bytes). The frame was saved on entry, before
            // any result was written: RAX still holds the number, the arguments their registers.
            t.frame.rip -= 2;
        } else {
            t.frame.rax = if rax == RESTART_SYSCALL { 0 } else { rax };
        }
        t.restartable = false;
        t.state = State::Runnable;
        t.futex = 0;
        t.deadline = u64::MAX;
        t.sleep_remaining = 0;
        self.queue.push(thread);
        if let Some(cpu) = (0..percpu::count()).find(|&cpu| self.idle[cpu] && !wakeups.0[cpu]) {
            wakeups.0[cpu] = true;
        }
    }

    /// Marks the thread on `cpu` as waiting until woken or `deadline` (then with
    /// `timeout_result` in RAX), saving its registers from `frame`.
    pub fn block_current(
        &mut self,
        cpu: usize,
        frame: &UserFrame,
        futex: u64,
        bitset: u32,
        deadline: u64,
        timeout_result: u64,
    ) -> usize {
        let thread = self.save_current(cpu, frame);
        self.next_seq += 1;
        let t = &mut self.threads[thread];
        t.state = State::Blocked;
        t.futex = futex;
        t.futex_bitset = bitset;
        t.deadline = deadline;
        t.timeout_result = timeout_result;
        t.wait_seq = self.next_seq;
        thread
    }

    /// The vCPU `thread` is running on, if it is running.
    pub fn cpu_running(&self, thread: usize) -> Option<usize> {
        (0..percpu::count()).find(|&cpu| self.current[cpu] == Some(thread))
    }

    /// True when the thread on `cpu` has a signal pending that its mask lets through: it must
    /// not start waiting (the signal would wait with it).
    pub fn signal_waiting(&self, cpu: usize) -> bool {
        let t = &self.threads[self.current(cpu)];
        (t.signal_pending | crate::signal::process_pending()) & !t.signal_mask != 0
    }

    fn save_current(&mut self, cpu: usize, frame: &UserFrame) -> usize {
        let thread = self.current(cpu);
        self.current[cpu] = None;
        let have_fsgsbase = self.have_fsgsbase;
        let t = &mut self.threads[thread];
        t.frame = *frame;
        t.fpu.save();
        t.fs_base = cpu::read_fs_base(have_fsgsbase, t.fs_base);
        thread
    }

    /// Ends the thread on `cpu` for good.
    pub fn free_current(&mut self, cpu: usize) {
        let thread = self.current(cpu);
        self.current[cpu] = None;
        self.threads[thread].state = State::Free;
        self.live -= 1;
    }

    /// Wakes every thread whose deadline has passed.
    fn expire(&mut self, now: u64, wakeups: &mut Wakeups) {
        for thread in self.used() {
            let t = &self.threads[thread];
            if t.state == State::Blocked && t.deadline <= now {
                let result = t.timeout_result;
                self.make_runnable(thread, result, wakeups);
            }
        }
    }

    fn earliest_deadline(&self) -> u64 {
        self.threads[self.used()]
            .iter()
            .filter(|t| t.state == State::Blocked)
            .map(|t| t.deadline)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Puts `thread` on `cpu`: its registers into `frame`, its SSE state and FS base into the CPU.
    fn load(&mut self, cpu: usize, thread: usize, frame: &mut UserFrame) {
        self.current[cpu] = Some(thread);
        let have_fsgsbase = self.have_fsgsbase;
        let t = &mut self.threads[thread];
        t.state = State::Running;
        *frame = t.frame;
        t.fpu.restore();
        cpu::restore_fs_base(cpu, t.fs_base, have_fsgsbase);
    }

    /// When `cpu`'s timer should fire now that it runs a thread: at the end of the slice if
    /// others wait for a vCPU, or at the earliest deadline if no vCPU is parked to watch it.
    fn timer_for(&self, cpu: usize, now: u64) -> u64 {
        let slice_end = if self.queue.len > 0 { now + SLICE_NS } else { u64::MAX };
        let someone_parked = (0..percpu::count()).any(|other| other != cpu && self.idle[other]);
        let deadline = if someone_parked { u64::MAX } else { self.earliest_deadline() };
        slice_end.min(deadline)
    }
}

/// Arms (or cancels, for u64::MAX) this vCPU's one-shot timer, unless it is armed for that
/// already: each port write is a VM exit.
fn arm_timer(mut sched: SpinGuard<'_, Scheduler>, cpu: usize, when: u64, now: u64) {
    let armed = sched.armed[cpu];
    let wanted = if when == u64::MAX { 0 } else { when };
    if armed == wanted || (wanted != 0 && armed != 0 && armed <= wanted && wanted - armed < 1_000_000) {
        return;
    }
    sched.armed[cpu] = wanted;
    ARMED_AT[cpu].store(wanted, Ordering::Release);
    drop(sched);
    let micros = if wanted == 0 { 0 } else { (wanted.saturating_sub(now) / 1000).clamp(1, u64::from(u32::MAX)) };
    out32(port::TIMER, micros as u32);
}

/// Runs another thread on `cpu`, loading it into `frame`; parks the vCPU while there is none.
/// The thread that was running must have been saved (or freed) already.
pub fn run_next(mut sched: SpinGuard<'_, Scheduler>, cpu: usize, frame: &mut UserFrame) {
    loop {
        let now = monotonic_ns();
        let mut wakeups = Wakeups::default();
        sched.expire(now, &mut wakeups);
        if let Some(thread) = sched.queue.pop() {
            sched.load(cpu, thread, frame);
            let when = sched.timer_for(cpu, now);
            arm_timer(sched, cpu, when, now);
            wakeups.send();
            return;
        }
        sched.idle[cpu] = true;
        let until = sched.earliest_deadline();
        drop(sched);
        wakeups.send();
        let micros = (until.saturating_sub(now) / 1000).clamp(1, LONGEST_PARK_US);
        if crate::console::hypercalls() {
            out32(port::SLEEP, micros as u32);
        } else {
            // Under QEMU there is no Sleep port (and one vCPU): watch the clock instead.
            let end = now + micros * 1000;
            while monotonic_ns() < end {
                core::hint::spin_loop();
            }
        }
        sched = SCHED.lock();
        sched.idle[cpu] = false;
    }
}

/// The boot vCPU's first thread: the program, at its entry point with the stack the VMM built.
pub fn start_program(entry: u64, stack: u64, have_fsgsbase: bool) -> ! {
    let cpu = 0;
    let frame = first_frame_address(cpu);
    {
        let mut sched = SCHED.lock();
        sched.have_fsgsbase = have_fsgsbase;
        let thread = sched.create_first(UserFrame::starting(entry, stack));
        // SAFETY: the frame slot at the top of this vCPU's stack is ours; nothing else is there.
        sched.load(cpu, thread, unsafe { &mut *frame });
    }
    crate::cpu::out8(port::BOOT_TIMER, cvm_guest_abi::boot_code::PROGRAM_ENTERED);
    // SAFETY: the frame holds the program's entry state; the VMM placed its code and stack.
    unsafe { return_to_user(frame) }
}

/// Every other vCPU, once the boot vCPU is ready: wait for a thread to run, then run it.
pub fn start_secondary(cpu: usize) -> ! {
    let frame = first_frame_address(cpu);
    // SAFETY: the frame slot at the top of this vCPU's stack is ours; nothing else is there.
    run_next(SCHED.lock(), cpu, unsafe { &mut *frame });
    // SAFETY: run_next loaded a runnable thread's registers into the frame.
    unsafe { return_to_user(frame) }
}

/// Interrupt 0x20, this vCPU's one-shot timer, taken while the program ran: wake whoever's
/// deadline passed, and if threads are waiting for a vCPU, move this one to the back of the
/// queue and run the next.
pub fn timer_interrupt(frame: &mut UserFrame, cpu: usize) {
    let mut sched = SCHED.lock();
    sched.armed[cpu] = 0;
    ARMED_AT[cpu].store(0, Ordering::Release);
    if sched.current[cpu].is_none() {
        return; // a stale interrupt that arrived on the way to another thread
    }
    let now = monotonic_ns();
    let mut wakeups = Wakeups::default();
    sched.expire(now, &mut wakeups);
    if sched.queue.len > 0 {
        let thread = sched.save_current(cpu, frame);
        let rax = frame.rax;
        sched.make_runnable(thread, rax, &mut wakeups);
        run_next(sched, cpu, frame);
    } else {
        let when = sched.timer_for(cpu, now);
        arm_timer(sched, cpu, when, now);
    }
    wakeups.send();
}

/// On the way back to the program from a system call: if threads wait for a vCPU (one was made
/// runnable while every vCPU was busy) and this vCPU's slice timer is not running, start it,
/// so the waiting thread gets a turn even if the running one never enters the kernel again.
///
/// And if this vCPU's timer is already due, act on it now: the VMM injects the interrupt only
/// while the program runs, and a thread that makes system calls all the time is in the kernel
/// at nearly every moment the VMM looks (a sleeper beside it overslept by 150 ms on average).
pub fn ensure_slice(frame: &mut UserFrame, cpu: usize) {
    let due = ARMED_AT[cpu].load(Ordering::Acquire);
    if due != 0 && due <= monotonic_ns() {
        timer_interrupt(frame, cpu);
        return;
    }
    if QUEUED.load(Ordering::Acquire) == 0 {
        return;
    }
    let sched = SCHED.lock();
    if sched.armed[cpu] != 0 || sched.current[cpu].is_none() {
        return;
    }
    let now = monotonic_ns();
    let when = sched.timer_for(cpu, now);
    arm_timer(sched, cpu, when, now);
}

/// `sched_yield`: to the back of the queue, if anyone else wants this vCPU.
pub fn yield_now(frame: &mut UserFrame, cpu: usize) {
    let mut sched = SCHED.lock();
    if sched.queue.len == 0 {
        frame.rax = 0;
        return;
    }
    let thread = sched.save_current(cpu, frame);
    let mut wakeups = Wakeups::default();
    sched.make_runnable(thread, 0, &mut wakeups);
    run_next(sched, cpu, frame);
    wakeups.send();
}

/// Blocks the calling thread until `deadline` (monotonic ns), for nanosleep; a signal for it
/// ends the sleep early with -EINTR and the time left written to `remaining` (if not 0).
pub fn sleep_until(frame: &mut UserFrame, cpu: usize, deadline: u64, remaining: u64) {
    let mut sched = SCHED.lock();
    let now = monotonic_ns();
    if deadline <= now {
        frame.rax = 0;
        return;
    }
    if sched.signal_waiting(cpu) {
        drop(sched);
        frame.rax = interrupted(remaining, deadline - now);
        return;
    }
    let thread = sched.block_current(cpu, frame, 0, 0, deadline, 0);
    sched.threads[thread].sleep_remaining = remaining;
    run_next(sched, cpu, frame);
}

/// -EINTR, having written `left` ns to the program's timespec at `remaining` (if not 0).
pub fn interrupted(remaining: u64, left: u64) -> u64 {
    if remaining != 0 {
        let _ = crate::user::write(remaining, [left / 1_000_000_000, left % 1_000_000_000]);
    }
    (-i64::from(EINTR.0)) as u64
}

/// `pause`: waits until a signal's handler has run (always -EINTR).
pub fn pause(frame: &mut UserFrame, cpu: usize) {
    let mut sched = SCHED.lock();
    if sched.signal_waiting(cpu) {
        frame.rax = (-i64::from(EINTR.0)) as u64;
        return;
    }
    sched.block_current(cpu, frame, 0, 0, u64::MAX, 0);
    run_next(sched, cpu, frame);
}
