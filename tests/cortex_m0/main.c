/* intlm's C runtime on a bare Cortex-M0 (QEMU's microbit: nRF51, 256 KB flash, 16 KB RAM), for
 * tests/test_export.py: no C library, the model file linked in as bytes (model.c, written by the test),
 * the sampled bytes written in hex through semihosting. Built with
 *
 *     arm-none-eabi-gcc -mcpu=cortex-m0 -mthumb -std=c99 -O2 -Wall -Werror -ffreestanding -nostdlib
 *         -I intlm -T tests/cortex_m0/microbit.ld -DPROMPT='"..."' -DLENGTH=N -DTEMPERATURE_Q4=T
 *         -DTOP_K=K -DSEED=S -o intlm.elf tests/cortex_m0/main.c model.c -lgcc
 *     qemu-system-arm -M microbit -nographic -monitor none -serial none
 *         -semihosting-config enable=on,target=native -kernel intlm.elf
 */
#define INTLM_NO_MAIN
#include "runtime.c"

extern const unsigned char model_intlm[];
extern const unsigned int model_intlm_len;

/* the C library functions runtime.c calls */
void *memcpy(void *to, const void *from, size_t n)
{
    unsigned char *a = to;
    const unsigned char *b = from;
    while (n--) *a++ = *b++;
    return to;
}
void *memmove(void *to, const void *from, size_t n)
{
    unsigned char *a = to;
    const unsigned char *b = from;
    if (a < b) return memcpy(to, from, n);
    while (n--) a[n] = b[n];
    return to;
}
void *memset(void *to, int c, size_t n)
{
    unsigned char *a = to;
    while (n--) *a++ = (unsigned char)c;
    return to;
}
int memcmp(const void *x, const void *y, size_t n)
{
    const unsigned char *a = x, *b = y;
    for (; n; n--, a++, b++)
        if (*a != *b) return *a - *b;
    return 0;
}
int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
        if (!*a) return 0;
    }
    return 0;
}

/* an ARM semihosting call: the debugger (here QEMU) does it */
static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
static void say(const char *text) { semihost(0x04, text); } /* SYS_WRITE0 */

static IntlmModel model;
static IntlmSampler sampler;
static int32_t work[2048];

static int run(void)
{
    static const char prompt[] = PROMPT, hex[] = "0123456789abcdef";
    IntlmState state;
    int32_t logits[VOCAB];
    char text[3] = {0, 0, 0};
    const char *problem = intlm_load(&model, model_intlm, model_intlm_len);
    unsigned i;
    if (problem) return say("error: model file "), say(problem), say("\n"), 1;
    if (intlm_work_bytes(&model) > sizeof work) return say("error: the model needs more working memory\n"), 1;
    intlm_start(&state, &model, work);
    intlm_sampler(&sampler, &model, TEMPERATURE_Q4, TOP_K, SEED);
    intlm_read_byte(&state, 0, logits);
    for (i = 0; prompt[i]; i++) intlm_read_byte(&state, (uint8_t)prompt[i], logits);
    for (i = 0; i < LENGTH; i++) {
        uint8_t b = intlm_choose(&sampler, logits, i);
        text[0] = hex[b >> 4];
        text[1] = hex[b & 15];
        say(text);
        intlm_read_byte(&state, b, logits);
    }
    say("\n");
    return 0;
}

/* reset: zero .bss, run, leave QEMU */
extern unsigned __bss_start__, __bss_end__, __stack;
static void reset(void)
{
    unsigned *p;
    for (p = &__bss_start__; p < &__bss_end__; p++) *p = 0;
    run();
    semihost(0x18, (const void *)0x20026); /* SYS_EXIT, application exit */
    for (;;) continue;
}
__attribute__((section(".vectors"), used)) static const void *const vectors[2] = {&__stack, (const void *)reset};
