//! PII detectors: find e-mail addresses, phone numbers, payment cards, IBANs
//! and national ids in free text, with the byte range of each match.
//!
//! The ranges are what later stages need for redaction and for a last check
//! on outgoing payloads, so [`scan`] is public and meant to be cheap on text
//! that holds nothing: regexes are compiled once, and each detector is skipped
//! outright when the text cannot hold what it looks for (no `@` for e-mail,
//! too few digits for the digit-based detectors).
//!
//! Every detector checks what a regex cannot (Luhn for cards, ISO 7064
//! mod-97 for IBANs, the allocation rules of SSNs and NINOs) and refuses
//! candidates glued to other words or numbers (`ORD-415-555-2671`,
//! `4111111111111111.00`), so order ids, amounts and timestamps do not count as
//! personal data.

use std::fmt;
use std::ops::{ControlFlow, Range};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use switchyard_schemas::{PiiScanner, Sensitivity};

#[cfg(test)]
mod tests;

/// A kind of personal data that can be recognised in text.
///
/// | detector | finds | class |
/// |---|---|---|
/// | `email` | `name@domain.tld` | `pii` |
/// | `phone` | `+<country code><digits>` with spaces, dashes or one pair of parentheses (8–15 digits in all); North-American `(415) 555-2671`, `415-555-2671`, `415.555.2671`, optionally after `1-` | `pii` |
/// | `payment_card` | 13–19 digits, single spaces or dashes between groups, passing the Luhn check, first digit 2–6 (the banking and financial industry identifiers: Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro) | `regulated` |
/// | `iban` | ISO 13616: country code, two check digits and up to 30 letters or digits, either unbroken or printed in groups of four, passing the mod-97 check | `regulated` |
/// | `national_id` | US SSN `ddd-dd-dddd` (not area 000, 666 or 9xx, group 00 or serial 0000); UK NINO `AB123456C`, spaces allowed, without the prefixes HMRC never allocates | `regulated` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// E-mail addresses.
    Email,
    /// International and North-American phone numbers.
    Phone,
    /// Payment card numbers (PANs).
    PaymentCard,
    /// International bank account numbers.
    Iban,
    /// US social security numbers and UK national insurance numbers.
    NationalId,
}

impl Detector {
    /// Every detector, in declaration order.
    pub const ALL: [Detector; 5] =
        [Detector::Email, Detector::Phone, Detector::PaymentCard, Detector::Iban, Detector::NationalId];

    /// The sensitivity class of text this detector fires on: `pii` for
    /// e-mail and phone, `regulated` for cards, IBANs and national ids.
    pub fn class(self) -> Sensitivity {
        match self {
            Detector::Email | Detector::Phone => Sensitivity::Pii,
            Detector::PaymentCard | Detector::Iban | Detector::NationalId => Sensitivity::Regulated,
        }
    }

    /// Snake-case name as used in manifests and reasons (`payment_card`).
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::PaymentCard => "payment_card",
            Detector::Iban => "iban",
            Detector::NationalId => "national_id",
        }
    }

    /// A match of this detector in `text`, if there is one (not necessarily
    /// the leftmost). Stops at the first hit, so it is the cheap way to ask
    /// "does this text hold an e-mail address?".
    pub fn find(self, text: &str) -> Option<Match> {
        let facts = TextFacts::of(text);
        let mut first = None;
        let _ = self.run(text, &facts, &mut |range| {
            first = Some(range);
            ControlFlow::Break(())
        });
        first.map(|range| Match { detector: self, range })
    }

    /// Every match of this detector in `text`, ordered by position, without
    /// overlaps.
    pub fn find_all(self, text: &str) -> Vec<Match> {
        let mut out = Vec::new();
        self.collect(text, &TextFacts::of(text), &mut out);
        out
    }

    fn collect(self, text: &str, facts: &TextFacts, out: &mut Vec<Match>) {
        let mut mine = Vec::new();
        let _ = self.run(text, facts, &mut |range| {
            mine.push(Match { detector: self, range });
            ControlFlow::Continue(())
        });
        // Phone and national id run two patterns each; of overlapping
        // candidates keep the one that starts first (the longer on a tie), so
        // a number is reported once.
        mine.sort_by_key(|m| (m.range.start, std::cmp::Reverse(m.range.end)));
        let mut kept_end = 0;
        mine.retain(|m| {
            let keep = kept_end == 0 || m.range.start >= kept_end;
            if keep {
                kept_end = m.range.end;
            }
            keep
        });
        out.extend(mine);
    }

    fn run(self, text: &str, facts: &TextFacts, emit: &mut Emit<'_>) -> ControlFlow<()> {
        match self {
            Detector::Email if facts.has_at => find_emails(text, emit),
            Detector::Phone if facts.has_plus && facts.digits >= PHONE_MIN_DIGITS => {
                find_international_phones(text, emit)?;
                find_north_american_phones(text, emit)
            }
            Detector::Phone if facts.digits >= NANP_DIGITS => find_north_american_phones(text, emit),
            Detector::PaymentCard if facts.digits >= CARD_MIN_DIGITS => find_cards(text, emit),
            Detector::Iban if facts.digits >= 2 && text.len() >= IBAN_MIN_LEN => find_ibans(text, emit),
            Detector::NationalId if facts.digits >= SSN_DIGITS => {
                find_ssns(text, emit)?;
                find_ninos(text, emit)
            }
            Detector::NationalId if facts.digits >= NINO_DIGITS => find_ninos(text, emit),
            _ => ControlFlow::Continue(()),
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One detector hit: which detector and where, as a byte range of the
/// scanned text (always on `char` boundaries).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Match {
    /// The detector that fired.
    pub detector: Detector,
    /// Byte range of the matched text.
    pub range: Range<usize>,
}

/// A set of detectors as a [`PiiScanner`]: what cloud workers run over
/// outgoing payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorSet(pub Vec<Detector>);

impl PiiScanner for DetectorSet {
    fn find(&self, text: &str) -> Vec<(Range<usize>, &'static str)> {
        scan_with(&self.0, text).into_iter().map(|m| (m.range, m.detector.as_str())).collect()
    }
}

/// Runs every detector over `text`. Matches are ordered by start (then end,
/// then detector); matches of different detectors may overlap (an IBAN's
/// digits can also pass as a card number), so a redactor should merge them.
pub fn scan(text: &str) -> Vec<Match> {
    scan_with(&Detector::ALL, text)
}

/// Runs the given detectors over `text`; see [`scan`].
pub fn scan_with(detectors: &[Detector], text: &str) -> Vec<Match> {
    let facts = TextFacts::of(text);
    let mut out = Vec::new();
    for &d in detectors {
        d.collect(text, &facts, &mut out);
    }
    out.sort_by_key(|m| (m.range.start, m.range.end, m.detector));
    out.dedup();
    out
}

/// The detectors among `detectors` that find something in `text`, in the
/// order given. Cheaper than [`scan_with`] when only the
/// kinds matter: each detector stops at its first hit, and the text is
/// pre-filtered once for all of them.
pub fn fired(detectors: &[Detector], text: &str) -> Vec<Detector> {
    let facts = TextFacts::of(text);
    detectors.iter().copied().filter(|d| d.run(text, &facts, &mut |_| ControlFlow::Break(())).is_break()).collect()
}

/// The Luhn (mod 10) check used by payment card numbers. Spaces and dashes
/// are ignored; any other non-digit, or no digit at all, fails.
pub fn luhn_valid(number: &str) -> bool {
    let digits: Option<Vec<u8>> =
        number.bytes().filter(|b| !matches!(b, b' ' | b'-')).map(|b| b.checked_sub(b'0').filter(|d| *d <= 9)).collect();
    match digits {
        Some(d) if !d.is_empty() => luhn_digits(d.into_iter()),
        _ => false,
    }
}

/// Luhn over digit values (0–9), most significant first.
fn luhn_digits(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    luhn_sum(digits, 1) % 10 == 0
}

/// The Luhn sum: digits from the right, every second one doubled (with 9
/// taken off a two-digit result), starting with the digit at `first` (0:
/// the rightmost).
fn luhn_sum(digits: impl DoubleEndedIterator<Item = u8>, first: usize) -> u32 {
    digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == first % 2 {
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum()
}

/// The Luhn check digit that makes `body` followed by it a valid number
/// (test card numbers); `None` when `body` is not all digits.
pub fn luhn_check_digit(body: &str) -> Option<char> {
    let digits: Option<Vec<u8>> = body.bytes().map(|b| b.checked_sub(b'0').filter(|d| *d <= 9)).collect();
    let sum = luhn_sum(digits?.into_iter(), 0);
    char::from_digit((10 - sum % 10) % 10, 10)
}

/// The ISO 7064 MOD 97-10 remainder of an alphanumeric string, letters
/// counting as 10 (`A`) to 35 (`Z`), either case. `None` for any other
/// character or an empty string.
pub fn mod97(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let mut rem: u32 = 0;
    for c in s.chars() {
        let v = c.to_digit(36)?;
        rem = if v < 10 { (rem * 10 + v) % 97 } else { (rem * 100 + v) % 97 };
    }
    Some(rem)
}

/// Whether `iban` is a structurally valid IBAN (ISO 13616): spaces are
/// ignored; then two letters, two check digits (02–98), 11–30 letters or
/// digits (15–34 characters in all), and the mod-97 of the rearranged number
/// is 1.
pub fn iban_valid(iban: &str) -> bool {
    // At most 34 characters: collect them on the stack, no allocation (the
    // detector calls this for every candidate).
    let mut buf = [0u8; IBAN_MAX_LEN];
    let mut len = 0;
    for c in iban.bytes().filter(|&c| c != b' ') {
        if len == IBAN_MAX_LEN {
            return false;
        }
        buf[len] = c;
        len += 1;
    }
    let b = &buf[..len];
    if len < IBAN_MIN_LEN
        || !b[..2].iter().all(u8::is_ascii_alphabetic)
        || !b[2..4].iter().all(u8::is_ascii_digit)
        || !b[4..].iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let check = (b[2] - b'0') * 10 + (b[3] - b'0');
    if !(2..=98).contains(&check) {
        return false;
    }
    // Move the country code and check digits to the end, then mod 97.
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = char::from(c).to_digit(36).unwrap_or(0);
        rem = if v < 10 { (rem * 10 + v) % 97 } else { (rem * 100 + v) % 97 };
    }
    rem == 1
}

type Emit<'a> = dyn FnMut(Range<usize>) -> ControlFlow<()> + 'a;

const PHONE_MIN_DIGITS: usize = 8;
const PHONE_MAX_DIGITS: usize = 15;
const NANP_DIGITS: usize = 10;
const CARD_MIN_DIGITS: usize = 13;
const CARD_MAX_DIGITS: usize = 19;
const IBAN_MIN_LEN: usize = 15;
const IBAN_MAX_LEN: usize = 34;
const SSN_DIGITS: usize = 9;
const NINO_DIGITS: usize = 6;

/// What one pass over the text learns, so detectors that cannot fire are
/// skipped without running their patterns.
struct TextFacts {
    digits: usize,
    has_at: bool,
    has_plus: bool,
}

impl TextFacts {
    fn of(text: &str) -> Self {
        let mut facts = TextFacts { digits: 0, has_at: false, has_plus: false };
        for b in text.bytes() {
            match b {
                b'0'..=b'9' => facts.digits += 1,
                b'@' => facts.has_at = true,
                b'+' => facts.has_plus = true,
                _ => {}
            }
        }
        facts
    }
}

/// Characters that join tokens into one identifier or number
/// (`ORD-415-555-2671`, `1.4111111111111111`, `id_123-45-6789`).
const JOINERS: [char; 5] = ['-', '.', '_', '/', ','];

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// True when the candidate starting at `start` is not the tail of a longer
/// word or number: the character before it is not a letter or digit, nor a
/// joiner that follows one.
fn clean_start(text: &str, start: usize) -> bool {
    let mut before = text[..start].chars().rev();
    match before.next() {
        None => true,
        Some(c) if is_word(c) => false,
        Some(c) if JOINERS.contains(&c) => !before.next().is_some_and(is_word),
        Some(_) => true,
    }
}

/// The mirror of [`clean_start`] for the end of a candidate.
fn clean_end(text: &str, end: usize) -> bool {
    let mut after = text[end..].chars();
    match after.next() {
        None => true,
        Some(c) if is_word(c) => false,
        Some(c) if JOINERS.contains(&c) => !after.next().is_some_and(is_word),
        Some(_) => true,
    }
}

/// Runs `re` over `text` and hands each match to `accept`, which returns the
/// range to report (possibly narrowed) or `None`. A refused candidate does
/// not hide an overlapping one: the search resumes one character after its
/// start, not after its end.
fn each_candidate(
    re: &Regex,
    text: &str,
    emit: &mut Emit<'_>,
    accept: impl Fn(&str, Range<usize>) -> Option<Range<usize>>,
) -> ControlFlow<()> {
    let mut pos = 0;
    while pos <= text.len() {
        let Some(m) = re.find_at(text, pos) else { break };
        match accept(text, m.range()) {
            Some(range) => {
                pos = range.end.max(m.start() + 1);
                emit(range)?;
            }
            None => pos = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8),
        }
        // A narrowed range can end inside a char only if `accept` is wrong;
        // move to the next boundary so `find_at` never panics.
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
    }
    ControlFlow::Continue(())
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("detector patterns are valid")
}

// ---------------------------------------------------------------- e-mail

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"));

fn find_emails(text: &str, emit: &mut Emit<'_>) -> ControlFlow<()> {
    for m in EMAIL.find_iter(text) {
        emit(m.range())?;
    }
    ControlFlow::Continue(())
}

// ---------------------------------------------------------------- phone

/// North-American numbers: `(415) 555-2671`, `415-555-2671`, `415.555.2671`,
/// optionally after `1-`/`1 `/`1.`. Area code and exchange start with 2–9.
static NANP: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?:1[\-. ])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[\-.])[2-9][0-9]{2}[\-.][0-9]{4}"));

fn find_north_american_phones(text: &str, emit: &mut Emit<'_>) -> ControlFlow<()> {
    each_candidate(&NANP, text, emit, |text, r| (clean_start(text, r.start) && clean_end(text, r.end)).then_some(r))
}

fn find_international_phones(text: &str, emit: &mut Emit<'_>) -> ControlFlow<()> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(off) = text[from..].find('+') {
        let start = from + off;
        from = start + 1;
        if bytes.get(start + 1).is_some_and(|b| (b'1'..=b'9').contains(b)) && clean_start(text, start) {
            if let Some(end) = international_phone_end(text, start) {
                emit(start..end)?;
                from = end;
            }
        }
    }
    ControlFlow::Continue(())
}

/// Parses `+<digits>` groups separated by a space, a dash, or one pair of
/// parentheses (`+1 (415) 555-2671`, `+44 20 7946 0958`). Stops at the
/// first other separator; drops trailing groups beyond 15 digits (E.164's
/// maximum); needs at least 8 digits. Returns the end of the number.
fn international_phone_end(text: &str, start: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = start + 1;
    // (start, end) of each digit group
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut paren_opened_before: Option<usize> = None; // group index after '('
    let mut paren_used = false;
    loop {
        let gs = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == gs {
            break;
        }
        groups.push((gs, i));
        let sep_start = i;
        while i < b.len() && i - sep_start < 2 && matches!(b[i], b' ' | b'-' | b'(' | b')') {
            i += 1;
        }
        let sep = &b[sep_start..i];
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            break;
        }
        let opens = sep.contains(&b'(');
        let closes = sep.contains(&b')');
        let ok = match sep {
            b" " | b"-" => true,
            b"(" | b" (" => !paren_used,
            b")" | b") " | b")-" => paren_opened_before.is_some(),
            _ => false,
        };
        if !ok {
            break;
        }
        if opens {
            paren_used = true;
            paren_opened_before = Some(groups.len());
        }
        if closes {
            paren_opened_before = None;
        }
    }
    if let Some(k) = paren_opened_before {
        // An unclosed parenthesis: the number ends before it.
        groups.truncate(k);
    }
    let mut digits: usize = groups.iter().map(|(s, e)| e - s).sum();
    while digits > PHONE_MAX_DIGITS {
        let (s, e) = groups.pop()?;
        digits -= e - s;
    }
    let end = groups.last()?.1;
    (digits >= PHONE_MIN_DIGITS && clean_end(text, end)).then_some(end)
}

// ---------------------------------------------------------------- payment card

/// Cards are found by walking runs of digit groups joined by single spaces
/// or dashes, then trying windows of whole groups: `ref 12 4111 1111 1111
/// 1111` holds a card although the run starts with `12`. A window may start
/// or end inside a run only at a space (a dash binds its groups into one
/// token), so `2024-4111-…` stays an id. A run without separators is taken
/// whole, so a 20-digit order id never yields a 16-digit card.
fn find_cards(text: &str, emit: &mut Emit<'_>) -> ControlFlow<()> {
    let b = text.as_bytes();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        groups.clear();
        let run_start = i;
        loop {
            let gs = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((gs, i));
            if i + 1 < b.len() && matches!(b[i], b' ' | b'-') && b[i + 1].is_ascii_digit() {
                i += 1;
            } else {
                break;
            }
        }
        let run_end = i;
        let starts_clean = clean_start(text, run_start);
        let ends_clean = clean_end(text, run_end);
        let mut g = 0;
        while g < groups.len() {
            let may_start = if g == 0 { starts_clean } else { b[groups[g].0 - 1] == b' ' };
            let mut best = None;
            if may_start {
                let mut count = 0;
                for (h, &(gs, ge)) in groups.iter().enumerate().skip(g) {
                    count += ge - gs;
                    if count > CARD_MAX_DIGITS {
                        break;
                    }
                    let may_end = if h + 1 == groups.len() { ends_clean } else { b[ge] == b' ' };
                    if count >= CARD_MIN_DIGITS && may_end && card_number_ok(b, groups[g].0, ge) {
                        best = Some(h);
                    }
                }
            }
            match best {
                Some(h) => {
                    emit(groups[g].0..groups[h].1)?;
                    g = h + 1;
                }
                None => g += 1,
            }
        }
    }
    ControlFlow::Continue(())
}

fn card_number_ok(b: &[u8], start: usize, end: usize) -> bool {
    if !(b'2'..=b'6').contains(&b[start]) {
        return false;
    }
    let mut digits = [0u8; CARD_MAX_DIGITS];
    let mut n = 0;
    for &c in &b[start..end] {
        if c.is_ascii_digit() {
            digits[n] = c - b'0';
            n += 1;
        }
    }
    luhn_digits(digits[..n].iter().copied())
}

// ---------------------------------------------------------------- IBAN

static IBAN_START: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z]{2}[0-9]{2}"));

fn find_ibans(text: &str, emit: &mut Emit<'_>) -> ControlFlow<()> {
    each_candidate(&IBAN_START, text, emit, |text, r| {
        let end = iban_end(text, r.start)?;
        Some(r.start..end)
    })
}

/// An IBAN at `start` is either one unbroken token of 15–34 characters, or
/// groups of four separated by single spaces, the last group 1–4
/// characters (`GB82 WEST 1234 5698 7654 32`). In grouped form the longest
/// valid prefix of whole groups wins, so trailing words are left out.
fn iban_end(text: &str, start: usize) -> Option<usize> {
    if !clean_start(text, start) {
        return None;
    }
    let b = text.as_bytes();
    let token_end = |from: usize| {
        let mut e = from;
        while e < b.len() && b[e].is_ascii_alphanumeric() {
            e += 1;
        }
        e
    };
    let first_end = token_end(start);
    // Candidate ends, shortest first: at most 34 / 4 + 1 groups.
    let mut ends = [0usize; IBAN_MAX_LEN / 4 + 1];
    let mut count;
    match first_end - start {
        n if n >= IBAN_MIN_LEN => {
            ends[0] = first_end;
            count = 1;
        }
        4 => {
            let mut end = first_end;
            let mut len = 4;
            ends[0] = end;
            count = 1;
            while len < IBAN_MAX_LEN && count < ends.len() && b.get(end) == Some(&b' ') {
                let next = token_end(end + 1);
                let n = next - (end + 1);
                if n == 0 || n > 4 {
                    break;
                }
                end = next;
                len += n;
                ends[count] = end;
                count += 1;
                if n < 4 {
                    break;
                }
            }
        }
        _ => return None,
    }
    ends[..count].iter().rev().copied().find(|&end| {
        let candidate = &text[start..end];
        let letters_one_case = {
            let mut letters = candidate.bytes().filter(u8::is_ascii_alphabetic);
            letters.clone().all(|c| c.is_ascii_uppercase()) || letters.all(|c| c.is_ascii_lowercase())
        };
        letters_one_case && iban_valid(candidate) && clean_end(text, end)
    })
}

// ---------------------------------------------------------------- national ids

static SSN: LazyLock<Regex> = LazyLock::new(|| regex(r"[0-9]{3}-[0-9]{2}-[0-9]{4}"));

fn find_ssns(text: &str, emit: &mut Emit<'_>) -> ControlFlow<()> {
    each_candidate(&SSN, text, emit, |text, r| {
        let s = &text[r.clone()];
        let (area, group, serial) = (&s[0..3], &s[4..6], &s[7..11]);
        let allocated = area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000";
        (allocated && clean_start(text, r.start) && clean_end(text, r.end)).then_some(r)
    })
}

static NINO: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-Da-d]"));

/// Prefixes HMRC never allocates, besides those excluded letter by letter.
const NINO_BAD_PREFIXES: [&str; 7] = ["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];

fn find_ninos(text: &str, emit: &mut Emit<'_>) -> ControlFlow<()> {
    each_candidate(&NINO, text, emit, |text, r| {
        let s = &text[r.clone()];
        let letters: Vec<u8> = s.bytes().filter(u8::is_ascii_alphabetic).collect();
        let one_case = letters.iter().all(u8::is_ascii_uppercase) || letters.iter().all(u8::is_ascii_lowercase);
        let (first, second) = (letters[0].to_ascii_uppercase(), letters[1].to_ascii_uppercase());
        let prefix = [first, second];
        let allocated = !b"DFIQUV".contains(&first)
            && !b"DFIOQUV".contains(&second)
            && !NINO_BAD_PREFIXES.iter().any(|p| p.as_bytes() == &prefix[..]);
        (one_case && allocated && clean_start(text, r.start) && clean_end(text, r.end)).then_some(r)
    })
}
