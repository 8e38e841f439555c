"""The seccomp filter, run by a small classic-BPF interpreter over synthetic system calls, for
both architectures (arm64's cannot run here); the sandbox tests run the x86_64 one for real."""

from __future__ import annotations

import struct

import pytest

from reconciler.node import seccomp
from reconciler.node.seccomp import (
    AARCH64,
    CLONE_NEW_ANY,
    REFUSED,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    X86_64,
    Arch,
)

EPERM = SECCOMP_RET_ERRNO | 1
ENOSYS = SECCOMP_RET_ERRNO | 38
CLONE_NEWUSER = 0x10000000
CLONE_THREAD_FLAGS = 0x003D0F00  # what the C library passes for a thread


def run(program: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """Classic BPF over struct seccomp_data {nr, arch, ip, args[6]}: the return value."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    code = [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        opcode, jt, jf, k = code[pc]
        if opcode == 0x20:  # ld [k]
            (accumulator,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif opcode == 0x15:  # jeq
            pc += 1 + (jt if accumulator == k else jf)
        elif opcode == 0x35:  # jge
            pc += 1 + (jt if accumulator >= k else jf)
        elif opcode == 0x45:  # jset
            pc += 1 + (jt if accumulator & k else jf)
        elif opcode == 0x06:  # ret
            return int(k)
        else:
            raise AssertionError(f"unexpected opcode {opcode:#x}")


ARCHES = [pytest.param(X86_64, id="x86_64"), pytest.param(AARCH64, id="aarch64")]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", REFUSED)
def test_each_refused_call_answers_eperm(arch: Arch, name: str) -> None:
    assert run(seccomp.program(arch), arch.numbers[name], arch.audit) == EPERM


@pytest.mark.parametrize("arch", ARCHES)
def test_clone_is_refused_with_any_namespace_flag_and_allowed_without(arch: Arch) -> None:
    program = seccomp.program(arch)
    clone = arch.numbers["clone"]
    assert run(program, clone, arch.audit, CLONE_THREAD_FLAGS) == SECCOMP_RET_ALLOW
    assert run(program, clone, arch.audit, 17) == SECCOMP_RET_ALLOW  # fork: SIGCHLD
    for bit in range(32):
        flag = 1 << bit
        if flag & CLONE_NEW_ANY:
            assert run(program, clone, arch.audit, flag | 17) == EPERM, hex(flag)
    assert run(program, clone, arch.audit, CLONE_NEWUSER) == EPERM


@pytest.mark.parametrize("arch", ARCHES)
def test_clone3_answers_enosys_and_the_rest_is_allowed(arch: Arch) -> None:
    program = seccomp.program(arch)
    assert run(program, arch.numbers["clone3"], arch.audit) == ENOSYS
    refused = {arch.numbers[name] for name in REFUSED} | {arch.numbers["clone3"]}
    for nr in range(460):
        if nr not in refused and nr != arch.numbers["clone"]:
            assert run(program, nr, arch.audit) == SECCOMP_RET_ALLOW, nr


def test_another_architecture_or_the_x32_abi_kills() -> None:
    program = seccomp.program(X86_64)
    assert run(program, 0, AARCH64.audit) == SECCOMP_RET_KILL_PROCESS
    assert run(program, 0, 0x40000003) == SECCOMP_RET_KILL_PROCESS  # i386
    assert run(program, 0x40000000 | 0, X86_64.audit) == SECCOMP_RET_KILL_PROCESS  # x32 read
    assert run(seccomp.program(AARCH64), 0, X86_64.audit) == SECCOMP_RET_KILL_PROCESS


def test_every_refused_call_has_a_number_on_each_architecture() -> None:
    for arch in (X86_64, AARCH64):
        assert set(REFUSED) | {"clone", "clone3"} == set(arch.numbers)
        assert len(set(arch.numbers.values())) == len(arch.numbers)  # no number twice


def test_an_unknown_architecture_is_said() -> None:
    assert seccomp.arch_of("x86_64") is X86_64
    assert seccomp.arch_of("arm64") is AARCH64
    with pytest.raises(seccomp.UnknownArch, match="no seccomp filter for the 'riscv64'"):
        seccomp.arch_of("riscv64")
