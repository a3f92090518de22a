/* Signals the way ordinary C programs use them (musl): a handler for a signal the program
 * sends itself, handlers for faults that jump back with siglongjmp (NULL dereference: SIGSEGV,
 * division by zero: SIGFPE, an invalid instruction: SIGILL), a handler on an alternate signal
 * stack, a mask that holds a signal back until it is unblocked, and page protections (a write
 * to a read-only page, a touch of an unmapped one: SIGSEGV). Prints the same lines
 * wherever it runs.
 *
 * usage: signals            the handlers above, then exit 0
 *        signals abort      abort(): killed by SIGABRT
 *        signals term       kill(getpid(), SIGTERM) with no handler: killed by SIGTERM */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t got_signal, got_code, fault_code;
static sigjmp_buf recover;
static volatile uintptr_t fault_address;

static void on_usr1(int signal, siginfo_t *info, void *context) {
    (void)context;
    got_signal = signal;
    got_code = info->si_code;
}

static void on_fault(int signal, siginfo_t *info, void *context) {
    (void)context;
    got_signal = signal;
    fault_address = (uintptr_t)info->si_addr;
    fault_code = info->si_code;
    siglongjmp(recover, 1);
}

static char alt_stack[64 * 1024];
static volatile int handler_on_alt_stack;

static void on_usr2(int signal) {
    char here;
    (void)signal;
    handler_on_alt_stack = &here >= alt_stack && &here < alt_stack + sizeof alt_stack;
}

static void install(int signal, void (*handler)(int, siginfo_t *, void *)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handler;
    action.sa_flags = SA_SIGINFO;
    sigaction(signal, &action, NULL);
}

static volatile int zero = 0, hundred = 100;
static volatile int *volatile null_pointer = NULL;

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "abort") == 0) {
        printf("aborting\n");
        fflush(stdout);
        abort();
    }
    if (argc > 1 && strcmp(argv[1], "term") == 0) {
        printf("terminating\n");
        fflush(stdout);
        kill(getpid(), SIGTERM);
        printf("still here\n");
        return 0;
    }

    install(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    printf("raise: handler ran for signal %d, si_code %s\n", got_signal, got_code == SI_TKILL ? "SI_TKILL" : "other");

    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    got_signal = 0;
    raise(SIGUSR1);
    int while_blocked = got_signal;
    sigset_t pending;
    sigpending(&pending);
    sigprocmask(SIG_SETMASK, &old, NULL);
    printf("mask: blocked signal waited (%d, pending %d), ran when unblocked (%d)\n", while_blocked,
           sigismember(&pending, SIGUSR1), got_signal);

    install(SIGSEGV, on_fault);
    got_signal = 0;
    if (sigsetjmp(recover, 1) == 0)
        *null_pointer = 1;
    printf("segv: caught signal %d at address %#lx\n", got_signal, (unsigned long)fault_address);

    install(SIGFPE, on_fault);
    got_signal = 0;
    if (sigsetjmp(recover, 1) == 0)
        got_code = hundred / zero;
    printf("fpe: caught signal %d\n", got_signal);

    install(SIGILL, on_fault);
    got_signal = 0;
    if (sigsetjmp(recover, 1) == 0)
        __asm__ volatile("ud2");
    printf("ill: caught signal %d\n", got_signal);

    long page_size = sysconf(_SC_PAGESIZE);
    char *page = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page[0] = 42;
    mprotect(page, page_size, PROT_READ);
    got_signal = 0;
    if (sigsetjmp(recover, 1) == 0)
        *(volatile char *)page = 1;
    printf("read-only page: write caught (signal %d, %s, at the page: %s), still reads %d\n", got_signal,
           fault_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other", fault_address == (uintptr_t)page ? "yes" : "no",
           page[0]);
    page[page_size] = 7; /* the second page stayed writable */
    munmap(page, 2 * page_size);
    got_signal = 0;
    if (sigsetjmp(recover, 1) == 0)
        got_code = *(volatile char *)(page + page_size);
    printf("unmapped page: touch caught (signal %d, %s)\n", got_signal,
           fault_code == SEGV_MAPERR ? "SEGV_MAPERR" : "other");
    char *reserved = mmap(NULL, 16 * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    got_signal = 0;
    if (sigsetjmp(recover, 1) == 0)
        reserved[0] = 1;
    mprotect(reserved, 16 * page_size, PROT_READ | PROT_WRITE);
    memset(reserved, 3, 16 * page_size);
    printf("PROT_NONE reservation: touch caught (signal %d), usable after mprotect: %s\n", got_signal,
           reserved[16 * page_size - 1] == 3 ? "yes" : "no");

    stack_t stack = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0};
    sigaltstack(&stack, NULL);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_usr2;
    action.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &action, NULL);
    raise(SIGUSR2);
    printf("sigaltstack: handler ran on the alternate stack: %s\n", handler_on_alt_stack ? "yes" : "no");
    return 0;
}
