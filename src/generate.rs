//! Synthetic card transactions for the demo, tests and benchmarks: mostly
//! clean events, some carrying personal data (for the router), some
//! malformed (for the DLQ).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use switchyard_schemas::headers;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// RNG seed: the same seed gives the same events.
    pub seed: u64,
    /// Share of malformed records (bad JSON, missing or mistyped fields, empty).
    pub malformed_rate: f64,
    /// Share of events carrying personal data (e-mail, phone in a note, card number).
    pub pii_rate: f64,
    /// Share of events asking for the `realtime` latency tier (header).
    pub realtime_rate: f64,
    /// Characters of plain prose (no personal data) appended to every
    /// event's `note`, for measuring the cost of scanning longer text.
    pub note_pad: usize,
    /// The latency tier header of the events that are not `realtime`
    /// (none: no header, so the pipeline's default tier).
    pub other_tier: Option<String>,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self { seed: 42, malformed_rate: 0.01, pii_rate: 0.10, realtime_rate: 0.10, note_pad: 0, other_tier: None }
    }
}

/// One generated record.
#[derive(Debug, Clone)]
pub struct GenRecord {
    /// Message key.
    pub key: String,
    /// Message value (may be malformed on purpose).
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Whether the record is malformed on purpose.
    pub malformed: bool,
}

const CATEGORIES: [&str; 7] = ["grocery", "electronics", "travel", "restaurant", "online", "fuel", "gambling"];
const CHANNELS: [&str; 3] = ["pos", "web", "app"];
const COUNTRIES: [&str; 6] = ["US", "GB", "DE", "FR", "NL", "ES"];
/// Words of the padding prose: no digits, no `@`, nothing a PII detector takes.
const PROSE: [&str; 12] =
    ["please", "deliver", "after", "noon", "leave", "parcel", "with", "the", "neighbour", "thanks", "ring", "twice"];

/// `n` characters of prose words chosen by `rng`.
fn prose(rng: &mut StdRng, n: usize) -> String {
    let mut s = String::with_capacity(n + 12);
    while s.len() < n {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(PROSE[rng.random_range(0..PROSE.len())]);
    }
    s.truncate(n);
    s
}

/// A deterministic stream of records.
pub struct Generator {
    rng: StdRng,
    opts: GenOptions,
    n: u64,
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller; good enough for synthetic data.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Luhn-valid 16-digit test card number starting with 4.
fn card_number(rng: &mut StdRng) -> String {
    let body: String = std::iter::once(4)
        .chain((0..14).map(|_| rng.random_range(0..10u32)))
        .map(|x| char::from_digit(x, 10).expect("digit"))
        .collect();
    let s = format!("{body}{}", switchyard_router::luhn_check_digit(&body).expect("digits"));
    format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
}

impl Generator {
    /// A generator with `opts`.
    pub fn new(opts: GenOptions) -> Self {
        Self { rng: StdRng::seed_from_u64(opts.seed), opts, n: 0 }
    }

    /// The next record.
    pub fn next_record(&mut self) -> GenRecord {
        let i = self.n;
        self.n += 1;
        let rng = &mut self.rng;
        let txn_id = format!("tx-{:010}", i);
        let fraud = rng.random_bool(0.025);
        let amount = ((if fraud { 5.2 } else { 3.9 }) + 1.0 * normal(rng)).exp().clamp(0.5, 25_000.0);
        let amount = (amount * 100.0).round() / 100.0;
        let hour = if fraud && rng.random_bool(0.6) { rng.random_range(0..6) } else { rng.random_range(0..24) };
        let cat = if fraud {
            ["electronics", "online", "gambling"][rng.random_range(0..3)]
        } else {
            CATEGORIES[rng.random_range(0..7)]
        };
        let channel = if fraud && rng.random_bool(0.6) { "web" } else { CHANNELS[rng.random_range(0..3)] };
        let maybe =
            |rng: &mut StdRng, v: serde_json::Value| if rng.random_bool(0.05) { serde_json::Value::Null } else { v };
        let distance = ((if fraud { 5.0 } else { 1.8 }) + 1.2 * normal(rng)).exp();
        let distance = maybe(rng, json!((distance * 10.0).round() / 10.0));
        let count = rng.random_range(0..if fraud { 15 } else { 6 });
        let count = maybe(rng, json!(count));
        let age = rng.random_range(if fraud { 1..200 } else { 30..4000 });
        let age = maybe(rng, json!(age));
        let currency = ["USD", "EUR", "GBP"][rng.random_range(0..3)];
        let mut ev = json!({
            "txn_id": txn_id,
            "amount": amount,
            "currency": currency,
            "merchant_category": cat,
            "hour": hour,
            "card_present": channel == "pos" && !fraud,
            "distance_km": distance,
            "txn_count_24h": count,
            "account_age_days": age,
            "channel": channel,
            "country": COUNTRIES[rng.random_range(0..COUNTRIES.len())],
        });
        if rng.random_bool(self.opts.pii_rate) {
            match rng.random_range(0..4) {
                0 => ev["customer_email"] = json!(format!("customer{i}@example.com")),
                1 => ev["note"] = json!(format!("call back on +44 20 7946 {:04}", i % 10_000)),
                2 => ev["card_number"] = json!(card_number(rng)),
                _ => ev["note"] = json!(format!("receipt to jane.doe{i}@example.org")),
            }
        } else if rng.random_bool(0.2) {
            ev["note"] = json!(format!("order {} gift wrap", 100_000 + i % 900_000));
        }
        if self.opts.note_pad > 0 {
            let pad = prose(rng, self.opts.note_pad);
            let note = match ev.get("note").and_then(|n| n.as_str()) {
                Some(n) => format!("{n} {pad}"),
                None => pad,
            };
            ev["note"] = json!(note);
        }
        let mut headers = Vec::new();
        if rng.random_bool(self.opts.realtime_rate) {
            headers.push((headers::LATENCY_TIER.to_string(), "realtime".to_string()));
        } else if let Some(t) = &self.opts.other_tier {
            headers.push((headers::LATENCY_TIER.to_string(), t.clone()));
        }
        let malformed = rng.random_bool(self.opts.malformed_rate);
        let payload = if malformed {
            match rng.random_range(0..5) {
                0 => b"{\"txn_id\": \"broken".to_vec(),
                1 => {
                    ev.as_object_mut().expect("object").remove("amount");
                    ev.to_string().into_bytes()
                }
                2 => {
                    ev["amount"] = json!("twelve");
                    ev.to_string().into_bytes()
                }
                3 => b"[1, 2, 3]".to_vec(),
                _ => Vec::new(),
            }
        } else {
            ev.to_string().into_bytes()
        };
        GenRecord { key: txn_id, payload, headers, malformed }
    }
}

/// Arrow schema of the transactions written to Parquet: every field of the
/// `card_txn` schema, nullable.
fn parquet_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType as T, Field, Schema};
    let f = |name: &str, t: T| Field::new(name, t, true);
    std::sync::Arc::new(Schema::new(vec![
        f("txn_id", T::Utf8),
        f("amount", T::Float64),
        f("currency", T::Utf8),
        f("merchant_category", T::Utf8),
        f("hour", T::Int64),
        f("card_present", T::Boolean),
        f("distance_km", T::Float64),
        f("txn_count_24h", T::Int64),
        f("account_age_days", T::Int64),
        f("channel", T::Utf8),
        f("country", T::Utf8),
        f("customer_email", T::Utf8),
        f("card_number", T::Utf8),
        f("note", T::Utf8),
    ]))
}

/// Writes `events` records to a Parquet file (row groups of 64 Ki rows).
/// Parquet holds typed rows only, so malformed records are not written;
/// returns (rows written, malformed records left out).
pub fn write_parquet(gen: &mut Generator, events: u64, path: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    use anyhow::Context as _;
    let schema = parquet_schema();
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(64 * 1024))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let (mut written, mut skipped) = (0u64, 0u64);
    let mut left = events;
    while left > 0 {
        let n = left.min(64 * 1024);
        left -= n;
        let mut decoder =
            arrow::json::ReaderBuilder::new(schema.clone()).with_batch_size(n as usize).build_decoder()?;
        for _ in 0..n {
            let r = gen.next_record();
            if r.malformed {
                skipped += 1;
                continue;
            }
            decoder.decode(&r.payload)?;
            written += 1;
        }
        if let Some(batch) = decoder.flush()? {
            writer.write(&batch)?;
        }
    }
    writer.close()?;
    Ok((written, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records_and_rates_roughly_hold() {
        let mut a = Generator::new(GenOptions::default());
        let mut b = Generator::new(GenOptions::default());
        let ra: Vec<_> = (0..2000).map(|_| a.next_record()).collect();
        let rb: Vec<_> = (0..2000).map(|_| b.next_record()).collect();
        assert!(ra.iter().zip(&rb).all(|(x, y)| x.payload == y.payload && x.headers == y.headers));
        let bad = ra.iter().filter(|r| r.malformed).count();
        assert!((5..60).contains(&bad), "{bad}");
    }

    #[test]
    fn note_pad_appends_that_much_prose_to_every_note_and_keeps_the_personal_data() {
        let mut padded = Generator::new(GenOptions { note_pad: 300, ..Default::default() });
        let (mut kept, mut emails) = (0, 0);
        for _ in 0..500 {
            let q = padded.next_record();
            let Ok(serde_json::Value::Object(ev)) = serde_json::from_slice::<serde_json::Value>(&q.payload) else {
                continue;
            };
            let note = ev["note"].as_str().expect("every padded event has a note");
            let pad = &note[note.len() - 300..];
            assert!(!pad.chars().any(|c| c.is_ascii_digit() || c == '@'), "{pad}");
            if note.len() > 300 {
                // The generated note (an order, a phone number, an e-mail address) is kept in front.
                let original = &note[..note.len() - 301];
                assert!(["order ", "call back on ", "receipt to "].iter().any(|p| original.starts_with(p)), "{note}");
                kept += 1;
            }
            emails += usize::from(ev.contains_key("customer_email"));
        }
        assert!(kept > 50 && emails > 5, "{kept} {emails}");
    }

    #[test]
    fn card_numbers_pass_luhn() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let card = card_number(&mut rng);
            assert!(switchyard_router::luhn_valid(&card), "{card}");
        }
    }
}
