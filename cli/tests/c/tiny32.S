# A 32-bit static i386 program without libc (x86_64 runs it too): touches
# 8 MiB of identical pages in .bss, sleeps 3 s (nanosleep), exits 0.
# Built with `as --32` and `ld -m elf_i386` (no multilib compiler needed).
        .globl _start
        .text
_start:
        mov $buf, %edi
        mov $(8*1024*1024/4), %ecx
        mov $0x5a5a5a5a, %eax
        rep stosl
        mov $162, %eax          # nanosleep
        mov $ts, %ebx
        xor %ecx, %ecx
        int $0x80
        mov $1, %eax            # exit
        xor %ebx, %ebx
        int $0x80
        .data
ts:     .long 3, 0
        .bss
        .lcomm buf, 8*1024*1024
