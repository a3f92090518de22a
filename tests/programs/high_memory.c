/* Memory beyond the VM's RAM, the ways a hostile probe broke it first.
 *
 * usage: high_memory race    4 threads touching the same fresh pages at once: prints the sum
 *        high_memory churn   map 200 MiB, touch 8 MiB, unmap, 6 times (frames and page tables
 *                            must be reused): prints "6 rounds"
 *        high_memory oom     touch 1 GiB one page at a time (more than the VM has)
 *        high_memory pipe    write to a pipe nobody reads: killed by SIGPIPE */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char *region;
static volatile int go;

static void *touch(void *arg) {
    long id = (long)arg;
    while (!go)
        ;
    for (int k = 0; k < 63; k++) {
        __atomic_fetch_add((long *)(region + k * (1 << 20)), 1, __ATOMIC_SEQ_CST);
        region[k * (1 << 20) + 8 + id] = (char)(id + 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "race";
    if (strcmp(mode, "race") == 0) {
        region = mmap(NULL, 1UL << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        pthread_t threads[4];
        for (long i = 0; i < 4; i++)
            pthread_create(&threads[i], NULL, touch, (void *)i);
        go = 1;
        for (int i = 0; i < 4; i++)
            pthread_join(threads[i], NULL);
        long sum = 0;
        for (int k = 0; k < 63; k++)
            sum += *(long *)(region + k * (1 << 20));
        printf("sum %ld\n", sum);
    } else if (strcmp(mode, "churn") == 0) {
        for (int round = 0; round < 6; round++) {
            char *p = mmap(NULL, 200 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            for (int j = 0; j < 8 << 20; j += 4096)
                p[j] = 1;
            munmap(p, 200 << 20);
        }
        printf("6 rounds\n");
    } else if (strcmp(mode, "oom") == 0) {
        char *p = mmap(NULL, 1UL << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (long j = 0; j < 1L << 30; j += 4096)
            p[j] = 1;
        printf("touched 1 GiB\n");
    } else if (strcmp(mode, "pipe") == 0) {
        int fds[2];
        pipe(fds);
        close(fds[0]);
        write(fds[1], "x", 1);
        printf("still here\n");
    }
    return 0;
}
