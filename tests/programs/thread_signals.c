/* Threads and signals together, the cases a first version of the guest kernel got wrong
 * (found by a hostile probe): a thread created while its creator spins, a signal to a thread
 * spinning on another CPU, a sleep cut short by a signal (and the time it reports left), a
 * process-directed signal while the sender blocks it, sigsuspend and pause, and a program that
 * leaves the direction flag set when it faults. Prints the same lines wherever it runs.
 *
 * usage: thread_signals          the cases above, exit 0
 *        thread_signals std      set DF, then fault: the SIGSEGV handler must run (exit 5) */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int started;
static volatile sig_atomic_t flag, got;

static void on_signal(int signal) {
    flag = 1;
    got = signal;
}

static void *mark_started(void *arg) {
    (void)arg;
    atomic_store(&started, 1);
    return NULL;
}

static void *spin_until_flag(void *arg) {
    (void)arg;
    atomic_store(&started, 1);
    while (!flag)
        ;
    return NULL;
}

static void *sleep_two_seconds(void *arg) {
    struct timespec request = {2, 0}, *left = arg;
    left->tv_sec = -7;
    int result = nanosleep(&request, left);
    return (void *)(long)(result == -1 && errno == EINTR);
}

static void *block_and_kill(void *arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    kill(getpid(), SIGUSR1);
    return NULL;
}

static pthread_t main_thread;

static void *signal_main_later(void *arg) {
    (void)arg;
    usleep(50000);
    pthread_kill(main_thread, SIGUSR1);
    return NULL;
}

static void on_segv(int signal) {
    (void)signal;
    write(1, "handler ran with DF set by the program\n", 39);
    _exit(5);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "std") == 0) {
        signal(SIGSEGV, on_segv);
        __asm__ volatile("std\n movq $1, 0x8");
        return 1;
    }
    signal(SIGUSR1, on_signal);
    main_thread = pthread_self();

    pthread_t thread;
    pthread_create(&thread, NULL, mark_started, NULL);
    while (!atomic_load(&started))
        ; /* never enters the kernel: only preemption lets the new thread run on one CPU */
    pthread_join(thread, NULL);
    printf("a thread created while its creator spins runs\n");

    atomic_store(&started, 0);
    pthread_create(&thread, NULL, spin_until_flag, NULL);
    while (!atomic_load(&started))
        usleep(1000);
    usleep(20000);
    pthread_kill(thread, SIGUSR1);
    pthread_join(thread, NULL);
    printf("a thread spinning elsewhere got its signal\n");

    struct timespec left;
    void *interrupted;
    pthread_create(&thread, NULL, sleep_two_seconds, &left);
    usleep(200000);
    pthread_kill(thread, SIGUSR1);
    pthread_join(thread, &interrupted);
    printf("nanosleep cut short: EINTR %s, about 1.8 s left: %s\n", interrupted ? "yes" : "no",
           left.tv_sec == 1 ? "yes" : "no");

    got = 0;
    pthread_create(&thread, NULL, block_and_kill, NULL);
    pthread_join(thread, NULL);
    for (int i = 0; i < 40 && !got; i++)
        usleep(10000);
    printf("kill(getpid()) from a thread that blocks it reached main: %s\n", got ? "yes" : "no");

    sigset_t block, old, none;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    got = 0;
    pthread_create(&thread, NULL, signal_main_later, NULL);
    sigemptyset(&none);
    int result = sigsuspend(&none);
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    pthread_join(thread, NULL);
    printf("sigsuspend: %d, handler ran: %s, mask back: %s\n", result, got ? "yes" : "no",
           sigismember(&now, SIGUSR1) ? "yes" : "no");

    sigprocmask(SIG_SETMASK, &old, NULL);
    got = 0;
    pthread_create(&thread, NULL, signal_main_later, NULL);
    pause();
    pthread_join(thread, NULL);
    printf("pause returned after the handler: %s\n", got ? "yes" : "no");
    return 0;
}
