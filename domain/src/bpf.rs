//! Packet filters: classic BPF programs, as libpcap's `pcap_compile` makes them from a
//! pcap-filter expression (tcpdump's syntax), checked and run here on each packet of a merge.
//!
//! The compiling is an adapter's (a [`crate::ports::FilterCompiler`]); running a program is
//! pure computation and follows libpcap's own interpreter (`bpf_filter.c`): a load past the
//! captured bytes, or a division by zero, rejects the packet; `len` is the packet's length on
//! the wire, not what was captured, so `greater`/`less` agree with tcpdump on truncated
//! packets. [`Filter`] holds one request's expression and its programs per link type.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::ports::FilterCompiler;

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION: usize = 4096;

/// Scratch memory words of a program.
const MEMWORDS: u32 = 16;

// Instruction classes, sizes, modes, operations and sources (bpf.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;
const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const OR: u16 = 0x40;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const NEG: u16 = 0x80;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// One instruction: `code`, jump offsets if true and if false, and the constant `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Class, size, mode or operation, source.
    pub code: u16,
    /// Instructions skipped when a conditional jump holds.
    pub jt: u8,
    /// Instructions skipped when it does not.
    pub jf: u8,
    /// The constant.
    pub k: u32,
}

impl Instruction {
    /// An instruction.
    pub fn new(code: u16, jt: u8, jf: u8, k: u32) -> Self {
        Self { code, jt, jf, k }
    }
}

/// The bytes a load of `code` reads (word, half word, byte).
fn size(code: u16) -> u32 {
    match code & 0x18 {
        W => 4,
        H => 2,
        _ => 1,
    }
}

/// A checked program: every jump lands inside it, it ends with a return, scratch memory
/// indexes exist, no division by a zero constant (libpcap's `bpf_validate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program(Vec<Instruction>);

impl Program {
    /// Checks `instructions`; the error says which one is wrong.
    pub fn new(instructions: Vec<Instruction>) -> std::result::Result<Self, String> {
        let len = instructions.len();
        if len == 0 {
            return Err("an empty program".into());
        }
        for (pc, i) in instructions.iter().enumerate() {
            let bad = |what: &str| Err(format!("instruction {pc} ({:#06x}): {what}", i.code));
            let rest = len - pc - 1;
            match i.code & 0x07 {
                LD | LDX => match i.code & 0xe0 {
                    ABS | IND if i.code & 0x18 == 0x18 => return bad("unknown load size"),
                    IMM | ABS | IND | LEN => {}
                    MEM if i.k < MEMWORDS => {}
                    MEM => return bad("scratch memory index out of range"),
                    MSH if i.code & 0x07 == LDX => {}
                    _ => return bad("unknown load mode"),
                },
                ST | STX if i.k >= MEMWORDS => return bad("scratch memory index out of range"),
                ST | STX => {}
                ALU => match i.code & 0xf0 {
                    DIV | MOD if i.code & 0x08 == K && i.k == 0 => {
                        return bad("division by a zero constant");
                    }
                    ADD | SUB | MUL | DIV | OR | AND | LSH | RSH | NEG | MOD | XOR => {}
                    _ => return bad("unknown arithmetic operation"),
                },
                JMP => match i.code & 0xf0 {
                    JA if (i.k as usize) < rest => {}
                    JEQ | JGT | JGE | JSET
                        if usize::from(i.jt) < rest && usize::from(i.jf) < rest => {}
                    JA | JEQ | JGT | JGE | JSET => return bad("a jump past the end"),
                    _ => return bad("unknown jump"),
                },
                RET if matches!(i.code & 0x18, K | A) => {}
                RET => return bad("unknown return"),
                MISC if matches!(i.code & 0xf8, TAX | TXA) => {}
                _ => return bad("unknown miscellaneous operation"),
            }
        }
        if instructions[len - 1].code & 0x07 != RET {
            return Err("the program does not end with a return".into());
        }
        Ok(Self(instructions))
    }

    /// The instructions.
    pub fn instructions(&self) -> &[Instruction] {
        &self.0
    }

    /// Runs the program on a packet whose first `data.len()` bytes were captured of
    /// `wire_len`: true when it keeps the packet (returns non-zero).
    pub fn matches(&self, data: &[u8], wire_len: u32) -> bool {
        self.run(data, wire_len) != 0
    }

    fn run(&self, p: &[u8], wire_len: u32) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut mem = [0u32; MEMWORDS as usize];
        let mut pc = 0usize;
        let load = |at: u32, size: u32| -> Option<u32> {
            let at = at as usize;
            let bytes = p.get(at..at.checked_add(size as usize)?)?;
            Some(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
        };
        loop {
            // Checked by `new`: every jump lands inside, the last instruction returns.
            let Some(&i) = self.0.get(pc) else {
                return 0;
            };
            pc += 1;
            match i.code & 0x07 {
                RET => {
                    return match i.code & 0x18 {
                        A => a,
                        _ => i.k,
                    };
                }
                LD => match i.code & 0xe0 {
                    ABS | IND if i.code & 0x18 == 0x18 => return 0,
                    ABS => match load(i.k, size(i.code)) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    IND => match x.checked_add(i.k).and_then(|at| load(at, size(i.code))) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    LEN => a = wire_len,
                    IMM => a = i.k,
                    MEM => a = mem[i.k as usize],
                    _ => return 0,
                },
                LDX => match i.code & 0xe0 {
                    LEN => x = wire_len,
                    IMM => x = i.k,
                    MEM => x = mem[i.k as usize],
                    MSH => match load(i.k, 1) {
                        Some(v) => x = (v & 0x0f) << 2,
                        None => return 0,
                    },
                    _ => return 0,
                },
                ST => mem[i.k as usize] = a,
                STX => mem[i.k as usize] = x,
                JMP => {
                    let operand = if i.code & 0x08 == X { x } else { i.k };
                    let taken = match i.code & 0xf0 {
                        JA => {
                            pc += i.k as usize;
                            continue;
                        }
                        JEQ => a == operand,
                        JGT => a > operand,
                        JGE => a >= operand,
                        JSET => a & operand != 0,
                        _ => return 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                ALU => {
                    let operand = if i.code & 0x08 == X { x } else { i.k };
                    a = match i.code & 0xf0 {
                        ADD => a.wrapping_add(operand),
                        SUB => a.wrapping_sub(operand),
                        MUL => a.wrapping_mul(operand),
                        DIV if operand == 0 => return 0,
                        DIV => a / operand,
                        MOD if operand == 0 => return 0,
                        MOD => a % operand,
                        AND => a & operand,
                        OR => a | operand,
                        XOR => a ^ operand,
                        LSH => a.checked_shl(operand).unwrap_or(0),
                        RSH => a.checked_shr(operand).unwrap_or(0),
                        NEG => a.wrapping_neg(),
                        _ => return 0,
                    };
                }
                MISC => match i.code & 0xf8 {
                    TAX => x = a,
                    TXA => a = x,
                    _ => return 0,
                },
                _ => return 0,
            }
        }
    }
}

/// A pcap-filter expression (tcpdump's syntax) as a request gave it: at most
/// [`MAX_EXPRESSION`] bytes, no NUL, not blank. Its syntax is the compiler's to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterExpression(String);

impl FilterExpression {
    /// Checks `text`.
    pub fn new(text: &str) -> Result<Self> {
        let reason = if text.trim().is_empty() {
            "it is empty".to_owned()
        } else if text.len() > MAX_EXPRESSION {
            format!(
                "it is {} bytes long, more than {MAX_EXPRESSION}",
                text.len()
            )
        } else if text.contains('\0') {
            "it holds a NUL character".to_owned()
        } else {
            return Ok(Self(text.to_owned()));
        };
        Err(Error::BadFilter {
            message: format!("the filter is refused: {reason}"),
        })
    }

    /// The expression.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One request's filter: its expression and its programs, compiled once per link type and
/// snapshot length, off the async threads.
pub struct Filter {
    expression: FilterExpression,
    compiler: Arc<dyn FilterCompiler>,
    programs: Mutex<Vec<Compiled>>,
}

/// A program and the link type and snap length it was compiled for.
type Compiled = ((u32, u32), Arc<Program>);

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("expression", &self.expression)
            .finish_non_exhaustive()
    }
}

impl Filter {
    /// `expression`, compiled by `compiler` when a link type needs it.
    pub fn new(expression: FilterExpression, compiler: Arc<dyn FilterCompiler>) -> Self {
        Self {
            expression,
            compiler,
            programs: Mutex::new(Vec::new()),
        }
    }

    /// The expression.
    pub fn expression(&self) -> &FilterExpression {
        &self.expression
    }

    /// The program for packets of `link_type` captured with `snaplen`: compiled on first use
    /// (on a blocking thread); [`Error::BadFilter`] with the compiler's words when the
    /// expression does not compile for it.
    pub async fn program(&self, link_type: u32, snaplen: u32) -> Result<Arc<Program>> {
        let key = (link_type, snaplen);
        if let Some(p) = self.cached(key) {
            return Ok(p);
        }
        let (compiler, text) = (self.compiler.clone(), self.expression.0.clone());
        let compiled =
            tokio::task::spawn_blocking(move || compiler.compile(&text, link_type, snaplen))
                .await
                .map_err(|e| Error::Internal(format!("the filter compiler stopped: {e}")))?
                .map_err(|message| Error::BadFilter { message })?;
        let program = Arc::new(compiled);
        let mut programs = self
            .programs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        programs.push((key, program.clone()));
        Ok(program)
    }

    fn cached(&self, key: (u32, u32)) -> Option<Arc<Program>> {
        self.programs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, p)| p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
        Instruction::new(code, jt, jf, k)
    }

    /// `ip and tcp dst port 5432` for Ethernet, as `tcpdump -dd` prints it (libpcap 1.10).
    fn tcp_dst_5432() -> Program {
        Program::new(vec![
            i(0x28, 0, 0, 12),
            i(0x15, 0, 8, 0x0800),
            i(0x30, 0, 0, 23),
            i(0x15, 0, 6, 6),
            i(0x28, 0, 0, 20),
            i(0x45, 4, 0, 0x1fff),
            i(0xb1, 0, 0, 14),
            i(0x48, 0, 0, 16),
            i(0x15, 0, 1, 5432),
            i(0x06, 0, 0, 262_144),
            i(0x06, 0, 0, 0),
        ])
        .unwrap()
    }

    fn tcp_packet(dport: u16, fragment: u16) -> Vec<u8> {
        let mut p = vec![0u8; 14 + 20 + 20];
        p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        p[14] = 0x45;
        p[20..22].copy_from_slice(&fragment.to_be_bytes());
        p[23] = 6;
        p[36..38].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn a_compiled_program_keeps_what_it_names_and_nothing_else() {
        let program = tcp_dst_5432();
        assert!(program.matches(&tcp_packet(5432, 0), 54));
        assert!(!program.matches(&tcp_packet(5433, 0), 54));
        // A fragment past the first has no TCP header to look at.
        assert!(!program.matches(&tcp_packet(5432, 0x0010), 54));
        let mut udp = tcp_packet(5432, 0);
        udp[23] = 17;
        assert!(!program.matches(&udp, 54));
    }

    #[test]
    fn a_load_past_the_captured_bytes_rejects_the_packet() {
        let program = tcp_dst_5432();
        let whole = tcp_packet(5432, 0);
        assert!(!program.matches(&whole[..37], 54), "cut inside the port");
        assert!(!program.matches(&[], 0));
    }

    #[test]
    fn len_is_the_length_on_the_wire() {
        // `greater 100`: len >= 100.
        let program = Program::new(vec![
            i(0x80, 0, 0, 0),
            i(0x35, 0, 1, 100),
            i(0x06, 0, 0, 262_144),
            i(0x06, 0, 0, 0),
        ])
        .unwrap();
        assert!(program.matches(&[0; 60], 1500), "truncated to 60 of 1500");
        assert!(!program.matches(&[0; 60], 60));
    }

    #[test]
    fn arithmetic_follows_libpcap() {
        let run = |code: u16, a: u32, k: u32| {
            Program::new(vec![i(0x00, 0, 0, a), i(code, 0, 0, k), i(0x16, 0, 0, 0)])
                .map(|p| p.run(&[], 0))
        };
        assert_eq!(run(ALU | ADD | K, u32::MAX, 2), Ok(1));
        assert_eq!(run(ALU | SUB | K, 1, 2), Ok(u32::MAX));
        assert_eq!(run(ALU | DIV | K, 7, 2), Ok(3));
        assert_eq!(run(ALU | MOD | K, 7, 4), Ok(3));
        assert_eq!(run(ALU | LSH | K, 1, 31), Ok(1 << 31));
        assert_eq!(run(ALU | LSH | K, 1, 32), Ok(0));
        assert_eq!(run(ALU | RSH | K, 0x80, 4), Ok(8));
        assert_eq!(run(ALU | NEG, 1, 0), Ok(u32::MAX));
        assert!(
            run(ALU | DIV | K, 1, 0).is_err(),
            "a zero constant is refused"
        );
        // By X = 0 at run time: the packet is rejected.
        let by_x = Program::new(vec![
            i(0x00, 0, 0, 5),
            i(ALU | DIV | X, 0, 0, 0),
            i(0x06, 0, 0, 1),
        ])
        .unwrap();
        assert_eq!(by_x.run(&[], 0), 0);
    }

    #[test]
    fn scratch_memory_and_index_registers_work() {
        // X = 4; M[3] = X; A = M[3]; A = P[X + 1]; return A.
        let program = Program::new(vec![
            i(LDX | IMM, 0, 0, 4),
            i(STX, 0, 0, 3),
            i(LD | MEM, 0, 0, 3),
            i(MISC | TAX, 0, 0, 0),
            i(LD | 0x10 | IND, 0, 0, 1),
            i(RET | A, 0, 0, 0),
        ])
        .unwrap();
        assert_eq!(program.run(&[0, 1, 2, 3, 4, 9, 6], 7), 9);
        assert_eq!(program.run(&[0, 1, 2, 3, 4], 5), 0, "P[5] is not captured");
    }

    #[test]
    fn malformed_programs_are_refused_naming_the_instruction() {
        let err = |v: Vec<Instruction>| Program::new(v).unwrap_err();
        assert_eq!(err(vec![]), "an empty program");
        assert!(err(vec![i(0x00, 0, 0, 0)]).contains("does not end with a return"));
        assert!(err(vec![i(JMP | JEQ | K, 5, 0, 0), i(RET, 0, 0, 0)]).contains("instruction 0"));
        assert!(err(vec![i(JMP | JA, 0, 0, 1), i(RET, 0, 0, 0)]).contains("past the end"));
        assert!(err(vec![i(ST, 0, 0, 16), i(RET, 0, 0, 0)]).contains("scratch memory"));
        assert!(err(vec![i(0xff, 0, 0, 0), i(RET, 0, 0, 0)]).contains("instruction 0"));
    }

    #[test]
    fn expressions_are_bounded_and_never_blank() {
        assert!(FilterExpression::new("tcp port 5432").is_ok());
        for bad in ["", "   ", "tcp\0", &"a".repeat(MAX_EXPRESSION + 1)] {
            assert!(
                matches!(FilterExpression::new(bad), Err(Error::BadFilter { .. })),
                "{bad:?}"
            );
        }
        assert!(FilterExpression::new(&"a".repeat(MAX_EXPRESSION)).is_ok());
    }
}
