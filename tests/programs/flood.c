/* Writes to stdout without end, 1 MiB per write: a program whose output never stops. */
#include <string.h>
#include <unistd.h>

int main(void) {
    static char chunk[1 << 20];
    memset(chunk, 'z', sizeof chunk);
    for (;;) {
        if (write(1, chunk, sizeof chunk) < 0) return 1;
    }
}
