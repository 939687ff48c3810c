# A 32-bit (i386) program that exits with its merge-any flag
# (prctl(PR_GET_MEMORY_MERGE)): a 64-bit preload library never runs in it.
.globl _start
_start:
    mov $172, %eax      # prctl on i386
    mov $68, %ebx       # PR_GET_MEMORY_MERGE
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %edi, %edi
    int $0x80
    mov %eax, %ebx
    mov $1, %eax        # exit
    int $0x80
