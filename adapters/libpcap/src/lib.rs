//! Packet filters compiled by libpcap, the library that defines tcpdump's filter language:
//! [`Libpcap`] implements the domain's [`FilterCompiler`] port with `pcap_open_dead` and
//! `pcap_compile` (optimized, as tcpdump compiles), and hands back the program's instructions
//! for the domain to check and run. libpcap is linked statically (see `build.rs`); no device is
//! ever listed or opened.

use packetcapture_domain::FilterCompiler;
use packetcapture_domain::bpf::{Instruction, Program};

/// Compiles with libpcap.
#[derive(Clone, Copy, Debug, Default)]
pub struct Libpcap;

impl FilterCompiler for Libpcap {
    /// libpcap's dead handles have a snap length of 65,535 (the pcap crate sets it); it only
    /// bounds the offsets a program may load from, which no expression reaches past.
    fn compile(&self, expression: &str, link_type: u32, _snaplen: u32) -> Result<Program, String> {
        let link = i32::try_from(link_type)
            .map_err(|_| format!("link type {link_type} is not one libpcap knows"))?;
        let handle = pcap::Capture::dead(pcap::Linktype(link)).map_err(|e| libpcap_words(&e))?;
        let compiled = handle
            .compile(expression, true)
            .map_err(|e| libpcap_words(&e))?;
        let instructions = compiled
            .get_instructions()
            .iter()
            .map(|i| parse(&i.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Program::new(instructions)
            .map_err(|e| format!("libpcap compiled a program this service cannot run: {e}"))
    }
}

/// libpcap's message, without the wrapper's prefix.
fn libpcap_words(e: &pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// One instruction as the pcap crate prints it: `code jt jf k`, in decimal.
fn parse(text: &str) -> Result<Instruction, String> {
    let bad = || format!("an instruction libpcap printed as {text:?} cannot be read");
    let mut fields = text.split_whitespace();
    let mut next = || fields.next().ok_or_else(bad);
    let code = next()?.parse().map_err(|_| bad())?;
    let jt = next()?.parse().map_err(|_| bad())?;
    let jf = next()?.parse().map_err(|_| bad())?;
    let k = next()?.parse().map_err(|_| bad())?;
    Ok(Instruction::new(code, jt, jf, k))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ETHERNET: u32 = 1;

    #[test]
    fn an_expression_compiles_to_the_program_tcpdump_prints() {
        // `tcpdump -dd -y EN10MB 'ip and tcp dst port 5432'` with Debian's libpcap 1.10.
        let program = Libpcap
            .compile("ip and tcp dst port 5432", ETHERNET, 262_144)
            .unwrap();
        let first: Vec<(u16, u32)> = program
            .instructions()
            .iter()
            .take(4)
            .map(|i| (i.code, i.k))
            .collect();
        assert_eq!(first, [(0x28, 12), (0x15, 0x0800), (0x30, 23), (0x15, 6)]);
        assert_eq!(program.instructions().last().unwrap().code, 0x06);
    }

    #[test]
    fn a_malformed_expression_is_refused_in_libpcap_s_words() {
        let e = Libpcap
            .compile("host 10.0.3.7 and", ETHERNET, 262_144)
            .unwrap_err();
        assert_eq!(e, "can't parse filter expression: syntax error");
        let e = Libpcap
            .compile("port 99999", ETHERNET, 262_144)
            .unwrap_err();
        assert_eq!(e, "illegal port number 99999 > 65535");
    }

    #[test]
    fn the_instruction_text_is_read_or_refused() {
        assert_eq!(parse("40 0 0 12").unwrap(), Instruction::new(40, 0, 0, 12));
        assert!(parse("40 0 0").is_err());
        assert!(parse("x 0 0 1").is_err());
    }
}
