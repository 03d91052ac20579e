//! Reading the faulting instruction: was it a store, and was it an atomic read-modify-write?
//!
//! [`is_write`] and [`is_atomic`] run inside the SIGSEGV handler (`handler.rs`): they only read the
//! interrupted context and the instruction's bytes, which is async-signal-safe. Other
//! architectures get conservative answers: every trap asks for write access, none is atomic.

/// Whether the trap was a store: bit 1 of the x86 page-fault error code (also set for a
/// read-modify-write).
#[cfg(target_arch = "x86_64")]
pub(super) fn is_write(ctx: *mut libc::c_void) -> bool {
    // SAFETY: for SA_SIGINFO handlers the third argument points at the interrupted ucontext.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    uc.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0
}

/// Without a decoder for this architecture every trap asks for write access: correct, slower.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn is_write(_ctx: *mut libc::c_void) -> bool {
    true
}

/// Whether the instruction at the interrupted program counter is an atomic read-modify-write: it
/// carries a `lock` prefix, or it is `xchg` with a memory operand (implicitly locked). Reads the
/// instruction bytes, which the CPU has just fetched, so they are mapped and readable.
#[cfg(target_arch = "x86_64")]
pub(super) fn is_atomic(ctx: *mut libc::c_void) -> bool {
    // SAFETY: for SA_SIGINFO handlers the third argument points at the interrupted ucontext.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize as *const u8;
    decode_atomic(|i| {
        // SAFETY: the faulting instruction's bytes (at most 15) were just fetched by the CPU.
        unsafe { rip.add(i).read_volatile() }
    })
}

/// No decoder for this architecture: no instruction is known to be atomic.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn is_atomic(_ctx: *mut libc::c_void) -> bool {
    false
}

/// The decision of `is_atomic` over an x86-64 instruction's bytes, `byte(i)` being byte `i`: a
/// `lock` prefix, or `xchg` with memory, after any legacy and REX prefixes.
pub fn decode_atomic(byte: impl Fn(usize) -> u8) -> bool {
    let mut i = 0;
    while i < 15 {
        match byte(i) {
            0xF0 => return true,
            // Other legacy prefixes: repeat, segment overrides, operand and address size.
            0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 | 0x66 | 0x67 => i += 1,
            0x40..=0x4F => {
                // REX, then the opcode.
                return matches!(byte(i + 1), 0x86 | 0x87);
            }
            op => return matches!(op, 0x86 | 0x87),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::decode_atomic;

    fn atomic(bytes: &[u8]) -> bool {
        decode_atomic(|i| bytes.get(i).copied().unwrap_or(0x90))
    }

    #[test]
    fn locked_and_exchanging_instructions_are_atomic() {
        assert!(atomic(&[0xF0, 0x48, 0x0F, 0xC1, 0x07])); // lock xadd [rdi], rax
        assert!(atomic(&[0xF0, 0x0F, 0xB1, 0x0F])); // lock cmpxchg [rdi], ecx
        assert!(atomic(&[0x66, 0xF0, 0x0F, 0xC1, 0x07])); // operand-size prefix first
        assert!(atomic(&[0x48, 0x87, 0x07])); // xchg [rdi], rax (a SeqCst store)
        assert!(atomic(&[0x86, 0x07])); // xchg [rdi], al
        assert!(!atomic(&[0x48, 0x89, 0x07])); // mov [rdi], rax (a Relaxed or Release store)
        assert!(!atomic(&[0x48, 0x8B, 0x07])); // mov rax, [rdi]
        assert!(!atomic(&[0xF3, 0x48, 0xA5])); // rep movsq
        assert!(!atomic(&[0x66; 20])); // prefixes only: not an instruction we recognise
    }
}
