/* What every libFuzzer target here shares: the entry point's prototype, and CHECK, which traps (a crash libFuzzer
 * records, with the input) when a property the target asserts does not hold. */
#ifndef SB_FUZZ_H
#define SB_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                                  \
    do {                                                                                                             \
        if (!(cond))                                                                                                 \
            __builtin_trap();                                                                                        \
    } while (0)

#endif
