/* Threads the way ordinary C programs use them (musl's pthreads: clone, futex, set_tid_address,
 * mmap'd stacks): workers adding to a counter under a mutex, a producer and a consumer handing
 * items over through a condition variable, sleeps, a thread that spins until the main thread
 * (which must get a CPU to do it: preemption) tells it to stop, and a thread writing a page
 * that the main thread makes read-only (the very next write must fault, wherever it runs). Prints the same lines wherever it runs;
 * exits 1 if a number is wrong.
 *
 * usage: threads [WORKERS] (default 4) */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 20000
#define ITEMS 2000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *add(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    struct timespec nap = {0, 2 * 1000 * 1000};
    nanosleep(&nap, NULL);
    return NULL;
}

/* A one-slot mailbox. */
static pthread_mutex_t box_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t box_changed = PTHREAD_COND_INITIALIZER;
static int box_full;
static long box_item;

static void *produce(void *arg) {
    (void)arg;
    for (long item = 1; item <= ITEMS; item++) {
        pthread_mutex_lock(&box_lock);
        while (box_full)
            pthread_cond_wait(&box_changed, &box_lock);
        box_item = item;
        box_full = 1;
        pthread_cond_signal(&box_changed);
        pthread_mutex_unlock(&box_lock);
    }
    return NULL;
}

static void *consume(void *arg) {
    long *sum = arg;
    for (int n = 0; n < ITEMS; n++) {
        pthread_mutex_lock(&box_lock);
        while (!box_full)
            pthread_cond_wait(&box_changed, &box_lock);
        *sum += box_item;
        box_full = 0;
        pthread_cond_signal(&box_changed);
        pthread_mutex_unlock(&box_lock);
    }
    return NULL;
}

static volatile int stop_spinning;

static void *spin(void *arg) {
    long *spins = arg;
    while (!stop_spinning)
        (*spins)++;
    return NULL;
}

static volatile char *shared_page;
static volatile int page_protected, writer_faulted;
static volatile long writes_after_protect;
static sigjmp_buf writer_recover;

static void on_segv(int signal) {
    (void)signal;
    writer_faulted = 1;
    siglongjmp(writer_recover, 1);
}

static void *write_page(void *arg) {
    (void)arg;
    if (sigsetjmp(writer_recover, 1) == 0) {
        for (;;) {
            /* Read the flag first: a write that starts after mprotect returned must fault. */
            int after = page_protected;
            shared_page[0]++;
            if (after && ++writes_after_protect > 1000000)
                break;
        }
    }
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int workers = argc > 1 ? atoi(argv[1]) : 4;
    if (workers < 1 || workers > 64) {
        fprintf(stderr, "threads: WORKERS must be 1 to 64\n");
        return 2;
    }
    pthread_t threads[64];
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&threads[i], NULL, add, NULL) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < workers; i++)
        pthread_join(threads[i], NULL);
    printf("mutex: %d threads added %ld\n", workers, counter);

    long sum = 0;
    pthread_t producer, consumer;
    if (pthread_create(&producer, NULL, produce, NULL) || pthread_create(&consumer, NULL, consume, &sum)) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    pthread_join(producer, NULL);
    pthread_join(consumer, NULL);
    printf("condvar: %d items handed over, sum %ld\n", ITEMS, sum);

    double before = now();
    struct timespec nap = {0, 20 * 1000 * 1000};
    nanosleep(&nap, NULL);
    double slept = now() - before;
    printf("sleep: 20 ms took at least 20 ms: %s\n", slept >= 0.020 ? "yes" : "no");

    long spins = 0;
    pthread_t spinner;
    if (pthread_create(&spinner, NULL, spin, &spins)) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    nanosleep(&nap, NULL);
    stop_spinning = 1;
    pthread_join(spinner, NULL);
    printf("preemption: a spinning thread let the main thread stop it\n");

    signal(SIGSEGV, on_segv);
    shared_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pthread_t writer;
    if (pthread_create(&writer, NULL, write_page, NULL)) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    nanosleep(&nap, NULL);
    mprotect((void *)shared_page, 4096, PROT_READ);
    page_protected = 1;
    pthread_join(writer, NULL);
    printf("mprotect: the writing thread faulted (%d) and wrote %ld times after\n", writer_faulted,
           writes_after_protect);

    int ok = counter == (long)workers * ROUNDS && sum == (long)ITEMS * (ITEMS + 1) / 2 && slept >= 0.020;
    return ok ? 0 : 1;
}
