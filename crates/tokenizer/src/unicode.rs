//! Codepoints the way llama.cpp sees them: UTF-8 decoding with its error policy, per-codepoint
//! category flags (generated table), and GPT-2's byte ↔ printable-character mapping.

use crate::unicode_tables::FLAG_RANGES;

/// Category flags of one codepoint; the bit values are those of llama.cpp's `unicode_cpt_flags`.
///
/// Exactly one category bit (undefined … control) is set for every codepoint; `WHITESPACE` is an
/// extra bit on top. The value 0 means "no codepoint" (a position outside the text), which
/// llama.cpp's splitters use as a sentinel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpFlags(pub u16);

impl CpFlags {
    /// Unassigned codepoint (category `Cn`).
    pub const UNDEFINED: u16 = 0x0001;
    /// `\p{N}`: decimal digits, letter numbers, other numbers.
    pub const NUMBER: u16 = 0x0002;
    /// `\p{L}`: letters of every case.
    pub const LETTER: u16 = 0x0004;
    /// `\p{Z}`: space, line and paragraph separators.
    pub const SEPARATOR: u16 = 0x0008;
    /// `\p{M}`: combining marks.
    pub const MARK: u16 = 0x0010;
    /// `\p{P}`: punctuation.
    pub const PUNCTUATION: u16 = 0x0020;
    /// `\p{S}`: symbols.
    pub const SYMBOL: u16 = 0x0040;
    /// `\p{C}`: control, format, private use, surrogate.
    pub const CONTROL: u16 = 0x0080;
    /// Mask of the category bits above.
    pub const CATEGORIES: u16 = 0x00FF;
    /// llama.cpp's whitespace set (Unicode `White_Space`).
    pub const WHITESPACE: u16 = 0x0100;

    /// True for a letter (`\p{L}`).
    #[inline]
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    /// True for a number (`\p{N}`).
    #[inline]
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    /// True for whitespace (`\s` in llama.cpp's sense).
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// True for punctuation (`\p{P}`).
    #[inline]
    pub fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
    /// True for a symbol (`\p{S}`).
    #[inline]
    pub fn is_symbol(self) -> bool {
        self.0 & Self::SYMBOL != 0
    }
    /// True for a combining mark (`\p{M}`).
    #[inline]
    pub fn is_mark(self) -> bool {
        self.0 & Self::MARK != 0
    }
    /// The category bits alone (whitespace bit removed).
    #[inline]
    pub fn category(self) -> u16 {
        self.0 & Self::CATEGORIES
    }
    /// True for the "no codepoint here" sentinel.
    #[inline]
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// Flags of the 128 ASCII codepoints, precomputed so the common case skips the binary search.
static ASCII_FLAGS: [u16; 128] = {
    let mut table = [0u16; 128];
    let mut c = 0usize;
    while c < 128 {
        table[c] = search_flags(c as u32);
        c += 1;
    }
    table
};

/// Binary search of the generated range table (usable in const context for the ASCII table).
const fn search_flags(cpt: u32) -> u16 {
    if cpt >= 0x110000 {
        return CpFlags::UNDEFINED;
    }
    // Find the last range whose start is <= cpt.
    let mut lo = 0usize;
    let mut hi = FLAG_RANGES.len();
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if FLAG_RANGES[mid].0 <= cpt {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    FLAG_RANGES[lo].1
}

/// Flags of a codepoint (codepoints past U+10FFFF are "undefined", as in llama.cpp).
#[inline]
pub fn flags(cpt: u32) -> CpFlags {
    if cpt < 128 {
        CpFlags(ASCII_FLAGS[cpt as usize])
    } else {
        CpFlags(search_flags(cpt))
    }
}

/// Number of bytes of the UTF-8 sequence that starts with `byte`, judged from its high nibble
/// alone (llama.cpp's `unicode_len_utf8`: a stray continuation byte counts as 1).
#[inline]
pub fn utf8_len(byte: u8) -> usize {
    const LOOKUP: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(byte >> 4) as usize] as usize
}

/// Decodes bytes into codepoints like llama.cpp's `unicode_cpts_from_utf8`: an invalid sequence
/// becomes U+FFFD and decoding resumes at the next byte.
pub fn codepoints(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match decode_one(bytes, i) {
            Some((cpt, len)) => {
                out.push(cpt);
                i += len;
            }
            None => {
                out.push(0xFFFD);
                i += 1;
            }
        }
    }
    out
}

/// Decodes the codepoint at `i` with llama.cpp's (lenient) rules: it checks lead and
/// continuation bits only, not overlong forms or surrogates.
fn decode_one(b: &[u8], i: usize) -> Option<(u32, usize)> {
    let b0 = b[i];
    let cont = |k: usize| b.get(i + k).is_some_and(|&x| x & 0xC0 == 0x80);
    if b0 & 0x80 == 0 {
        Some((b0 as u32, 1))
    } else if b0 & 0x40 == 0 {
        None
    } else if b0 & 0x20 == 0 {
        cont(1).then(|| ((((b0 & 0x1F) as u32) << 6) | (b[i + 1] & 0x3F) as u32, 2))
    } else if b0 & 0x10 == 0 {
        (cont(1) && cont(2)).then(|| {
            let c = (((b0 & 0x0F) as u32) << 12)
                | (((b[i + 1] & 0x3F) as u32) << 6)
                | (b[i + 2] & 0x3F) as u32;
            (c, 3)
        })
    } else if b0 & 0x08 == 0 {
        (cont(1) && cont(2) && cont(3)).then(|| {
            let c = (((b0 & 0x07) as u32) << 18)
                | (((b[i + 1] & 0x3F) as u32) << 12)
                | (((b[i + 2] & 0x3F) as u32) << 6)
                | (b[i + 3] & 0x3F) as u32;
            (c, 4)
        })
    } else {
        None
    }
}

/// Appends the UTF-8 encoding of `cpt` (any value up to U+10FFFF, surrogates included, as
/// llama.cpp does) to `out`.
pub fn push_utf8(out: &mut Vec<u8>, cpt: u32) {
    if cpt <= 0x7F {
        out.push(cpt as u8);
    } else if cpt <= 0x7FF {
        out.extend_from_slice(&[0xC0 | (cpt >> 6) as u8 & 0x1F, 0x80 | (cpt & 0x3F) as u8]);
    } else if cpt <= 0xFFFF {
        out.extend_from_slice(&[
            0xE0 | ((cpt >> 12) & 0x0F) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            0xF0 | ((cpt >> 18) & 0x07) as u8,
            0x80 | ((cpt >> 12) & 0x3F) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]);
    }
}

/// GPT-2's byte → character map: printable Latin-1 bytes map to themselves, the other 68 bytes
/// to U+0100.. in byte order, so every byte has a visible, non-space stand-in.
pub static BYTE_TO_CHAR: [char; 256] = {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        map[b] = if printable {
            match char::from_u32(b as u32) {
                Some(c) => c,
                None => '\0',
            }
        } else {
            let c = match char::from_u32(256 + n) {
                Some(c) => c,
                None => '\0',
            };
            n += 1;
            c
        };
        b += 1;
    }
    map
};

/// Inverse of [`BYTE_TO_CHAR`]: the byte a GPT-2 stand-in character represents.
#[inline]
pub fn char_to_byte(c: char) -> Option<u8> {
    let c = c as u32;
    match c {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(c as u8),
        0x100..=0x143 => Some(NON_PRINTABLE_BYTES[(c - 0x100) as usize]),
        _ => None,
    }
}

/// The 68 bytes that GPT-2 moves to U+0100.., in order.
static NON_PRINTABLE_BYTES: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0usize;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        if !printable {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_flags_match_llama_cpp() {
        assert!(flags('a' as u32).is_letter());
        assert!(flags('Z' as u32).is_letter());
        assert!(flags('7' as u32).is_number());
        assert!(flags(' ' as u32).is_whitespace());
        assert_eq!(flags(' ' as u32).category(), CpFlags::SEPARATOR);
        assert!(flags('\n' as u32).is_whitespace());
        assert_eq!(flags('\n' as u32).category(), CpFlags::CONTROL);
        assert!(flags('!' as u32).is_punctuation());
        assert!(flags('$' as u32).is_symbol());
        assert!(flags('~' as u32).is_symbol());
        assert!(!flags(0x1F).is_whitespace());
    }

    #[test]
    fn non_ascii_flags() {
        assert!(flags('é' as u32).is_letter());
        assert!(flags('中' as u32).is_letter());
        assert!(flags('²' as u32).is_number());
        assert!(flags(0x3000).is_whitespace());
        assert!(flags(0x0301).is_mark());
        assert_eq!(flags(0x0378).category(), CpFlags::UNDEFINED);
        assert_eq!(flags(0x0CF3).category(), CpFlags::MARK, "Unicode 15 mark");
        assert_eq!(
            flags(0x1C89).category(),
            CpFlags::UNDEFINED,
            "Unicode 16 letter"
        );
        assert_eq!(flags(0x110000).category(), CpFlags::UNDEFINED);
        assert_eq!(flags('😀' as u32).category(), CpFlags::SYMBOL);
    }

    #[test]
    fn byte_map_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn lenient_utf8_decoding() {
        assert_eq!(
            codepoints("aé中😀".as_bytes()),
            vec![0x61, 0xE9, 0x4E2D, 0x1F600]
        );
        assert_eq!(
            codepoints(&[0x61, 0x80, 0xE4, 0xB8]),
            vec![0x61, 0xFFFD, 0xFFFD, 0xFFFD]
        );
        let mut out = Vec::new();
        for c in [0x61, 0xE9, 0x4E2D, 0x1F600] {
            push_utf8(&mut out, c);
        }
        assert_eq!(out, "aé中😀".as_bytes());
    }
}
