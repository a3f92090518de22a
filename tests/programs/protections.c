/* Page protections at the places where a kernel's page tables change shape: one page in the
 * middle of memory mapped with large pages (the guest kernel splits a 2 MiB page), a range
 * across a 2 MiB boundary, a whole aligned 2 MiB region taken away and given back, a page
 * unmapped from a split region, and access given back. Each check reads and writes the pages
 * around the change too, so a table written wrong (a neighbour lost, contents moved) shows.
 * Prints the same lines wherever it runs. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define LARGE (2UL << 20)

static sigjmp_buf recover;

static void on_fault(int signal) {
    (void)signal;
    siglongjmp(recover, 1);
}

/* 'r' or 'w' as the access works, '-' when it faults. */
static char try_read(volatile char *p) {
    if (sigsetjmp(recover, 1))
        return '-';
    (void)*p;
    return 'r';
}

static char try_write(volatile char *p) {
    if (sigsetjmp(recover, 1))
        return '-';
    *p = *p;
    return 'w';
}

/* "rw" / "r-" / "--" for the page at p, and whether it still holds its pattern byte. */
static void show(const char *what, char *p, uintptr_t base) {
    char access[3] = {try_read(p), try_write(p), 0};
    int intact = access[0] == '-' || (unsigned char)*p == (unsigned char)(((uintptr_t)p - base) / PAGE);
    printf("%s %s%s\n", what, access, intact ? "" : " (contents changed)");
}

int main(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_fault;
    sigaction(SIGSEGV, &action, NULL);
    sigaction(SIGBUS, &action, NULL);

    /* 8 MiB: at least two whole aligned 2 MiB regions inside. */
    char *map = mmap(NULL, 4 * LARGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        printf("mmap failed\n");
        return 1;
    }
    uintptr_t base = (uintptr_t)map;
    char *aligned = (char *)(((uintptr_t)map + LARGE - 1) & ~(LARGE - 1));
    for (uintptr_t at = 0; at < 4 * LARGE; at += PAGE)
        map[at] = (char)(at / PAGE);

    /* One page in the middle of a 2 MiB region. */
    char *one = aligned + 100 * PAGE;
    mprotect(one, PAGE, PROT_READ);
    show("one page read-only:", one, base);
    show("  the page before:", one - PAGE, base);
    show("  the page after:", one + PAGE, base);
    show("  the region's last page:", aligned + LARGE - PAGE, base);

    /* Four pages across the boundary between two 2 MiB regions. */
    char *across = aligned + LARGE - 2 * PAGE;
    mprotect(across, 4 * PAGE, PROT_READ);
    show("across a boundary, first:", across, base);
    show("across a boundary, last:", across + 3 * PAGE, base);
    show("  the page after:", across + 4 * PAGE, base);

    /* A whole aligned 2 MiB region taken away, then given back. */
    char *whole = aligned + LARGE;
    mprotect(whole, LARGE, PROT_NONE);
    show("whole region, none:", whole + 5 * PAGE, base);
    show("  the page after it:", whole + LARGE, base);
    mprotect(whole, LARGE, PROT_READ | PROT_WRITE);
    show("whole region given back:", whole + 5 * PAGE, base);
    show("  its first page:", whole, base);
    char *untouched = aligned + 2 * LARGE;
    mprotect(untouched, LARGE, PROT_NONE);
    show("a region never split, none:", untouched + LARGE - PAGE, base);
    mprotect(untouched, LARGE, PROT_READ | PROT_WRITE);
    show("  given back:", untouched + LARGE - PAGE, base);

    /* A page unmapped from the split region; access given back to the read-only one. */
    munmap(one + 2 * PAGE, PAGE);
    show("an unmapped page:", one + 2 * PAGE, base);
    mprotect(one, PAGE, PROT_READ | PROT_WRITE);
    show("the read-only page made writable:", one, base);
    show("  the page before the unmapped one:", one + PAGE, base);

    /* mprotect of a range that reaches an unmapped page: ENOMEM; pages before the hole get
     * the new access (Linux changes the mappings it walked before it met the hole), the hole
     * stays unmapped. */
    mprotect(one + PAGE, PAGE, PROT_READ);
    errno = 0;
    int refused = mprotect(one + PAGE, 2 * PAGE, PROT_READ | PROT_WRITE);
    printf("mprotect into an unmapped page: %s\n", refused == -1 && errno == ENOMEM ? "ENOMEM" : "allowed");
    show("  the mapped page before the hole:", one + PAGE, base);
    show("  the hole:", one + 2 * PAGE, base);
    errno = 0;
    refused = mprotect(one + 2 * PAGE, PAGE, PROT_READ | PROT_WRITE);
    printf("mprotect of the unmapped page alone: %s\n", refused == -1 && errno == ENOMEM ? "ENOMEM" : "allowed");
    show("  the hole:", one + 2 * PAGE, base);

    /* munmap where nothing is mapped (32 TiB: above any guest RAM, below the user limit) is
     * fine; past the user limit it is EINVAL. */
    printf("munmap where nothing is mapped: %d\n", munmap((void *)(32UL << 40), PAGE));
    errno = 0;
    int beyond = munmap((void *)0x7ffffffff000UL, 2 * PAGE);
    printf("munmap past the user limit: %s\n", beyond == -1 && errno == EINVAL ? "EINVAL" : "allowed");
    return 0;
}
