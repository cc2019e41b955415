use proptest::prelude::*;

use super::*;

/// The texts `detector` finds in `text`.
fn found(detector: Detector, text: &str) -> Vec<&str> {
    detector.find_all(text).into_iter().map(|m| &text[m.range]).collect()
}

fn assert_finds(detector: Detector, text: &str, expected: &str) {
    assert_eq!(found(detector, text), vec![expected], "{detector} in {text:?}");
    assert!(detector.find(text).is_some(), "{detector} find() in {text:?}");
}

fn assert_none(detector: Detector, text: &str) {
    assert_eq!(found(detector, text), Vec::<&str>::new(), "{detector} must not fire in {text:?}");
    assert_eq!(detector.find(text), None, "{detector} find() in {text:?}");
}

#[test]
fn classes_follow_the_documented_mapping() {
    assert_eq!(Detector::Email.class(), Sensitivity::Pii);
    assert_eq!(Detector::Phone.class(), Sensitivity::Pii);
    assert_eq!(Detector::PaymentCard.class(), Sensitivity::Regulated);
    assert_eq!(Detector::Iban.class(), Sensitivity::Regulated);
    assert_eq!(Detector::NationalId.class(), Sensitivity::Regulated);
}

#[test]
fn names_round_trip_through_serde() {
    for d in Detector::ALL {
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.as_str()));
        assert_eq!(serde_json::from_str::<Detector>(&json).unwrap(), d);
    }
}

// ---------------------------------------------------------------- Luhn, mod-97

#[test]
fn luhn_accepts_known_valid_numbers() {
    for n in [
        "4111 1111 1111 1111",
        "4111111111111111",
        "5555-5555-5555-4444",
        "378282246310005",
        "6011111111111117",
        "4222222222222",
        "79927398713",
        "0",
    ] {
        assert!(luhn_valid(n), "{n}");
    }
}

#[test]
fn luhn_check_digits_complete_valid_numbers() {
    for body in ["453914000088034", "7992739871", "0", "37828224631000"] {
        let n = format!("{body}{}", luhn_check_digit(body).unwrap());
        assert!(luhn_valid(&n), "{n}");
        let wrong = format!("{body}{}", (luhn_check_digit(body).unwrap().to_digit(10).unwrap() + 1) % 10);
        assert!(!luhn_valid(&wrong), "{wrong}");
    }
    assert_eq!(luhn_check_digit("7992739871"), Some('3'));
    assert_eq!(luhn_check_digit("12a"), None);
}

#[test]
fn luhn_rejects_invalid_numbers_and_non_digits() {
    for n in ["4111 1111 1111 1112", "79927398710", "1234567812345678", "", " - ", "4111x1111", "４１１１"] {
        assert!(!luhn_valid(n), "{n}");
    }
}

#[test]
fn mod97_computes_the_iso7064_remainder() {
    assert_eq!(mod97("0"), Some(0));
    assert_eq!(mod97("97"), Some(0));
    assert_eq!(mod97("98"), Some(1));
    // Letters count as 10..35, in either case.
    assert_eq!(mod97("A"), Some(10));
    assert_eq!(mod97("z"), Some(35));
    assert_eq!(mod97("WEST12345698765432GB82"), Some(1));
    assert_eq!(mod97(""), None);
    assert_eq!(mod97("AB-1"), None);
}

#[test]
fn iban_accepts_known_valid_numbers() {
    for iban in [
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "NL91ABNA0417164300",
        "FR1420041010050500013M02606",
        "NO9386011117947",
        "BE68539007547034",
        "MT84MALT011000012345MTLCAST001S",
        "gb82west12345698765432",
    ] {
        assert!(iban_valid(iban), "{iban}");
    }
}

#[test]
fn iban_rejects_bad_checksums_and_shapes() {
    for iban in [
        "GB82 WEST 1234 5698 7654 31", // last digit changed
        "GB28 WEST 1234 5698 7654 32", // check digits swapped
        "DE89370400440532013001",
        "GB82WEST1234",                // too short
        "1282WEST12345698765432",      // country code not letters
        "GBX2WEST12345698765432",      // check digits not digits
        "GB82-WEST-1234-5698-7654-32", // dashes are not IBAN separators
        "GB00WEST12345698765432",      // check digits out of range
        "",
    ] {
        assert!(!iban_valid(iban), "{iban}");
    }
}

// ---------------------------------------------------------------- e-mail

#[test]
fn email_finds_addresses_in_text() {
    assert_finds(Detector::Email, "contact alice@example.com today", "alice@example.com");
    assert_finds(Detector::Email, "<bob.smith+tag@mail.example.co.uk>", "bob.smith+tag@mail.example.co.uk");
    assert_finds(Detector::Email, "x_y-z%1@sub-domain.example.org.", "x_y-z%1@sub-domain.example.org");
    assert_eq!(found(Detector::Email, "a@b.io, c@d.io"), vec!["a@b.io", "c@d.io"]);
}

#[test]
fn email_ignores_things_that_only_look_like_addresses() {
    for text in [
        "no at sign here",
        "@mention in a chat",
        "user@localhost",
        "pkg@1.2.3",
        "price@2x",
        "a@b",
        "user@ example.com",
        "user@-example.com",
    ] {
        assert_none(Detector::Email, text);
    }
}

// ---------------------------------------------------------------- phone

#[test]
fn phone_finds_international_numbers() {
    assert_finds(Detector::Phone, "call +44 20 7946 0958 now", "+44 20 7946 0958");
    assert_finds(Detector::Phone, "+4915112345678", "+4915112345678");
    assert_finds(Detector::Phone, "tel:+1 (415) 555-2671.", "+1 (415) 555-2671");
    assert_finds(Detector::Phone, "(+33 1-42-68-53-00)", "+33 1-42-68-53-00");
    assert_finds(Detector::Phone, "+44 (0) 20 7946 0958", "+44 (0) 20 7946 0958");
    // A trailing number after another separator is not part of it.
    assert_finds(Detector::Phone, "+44 20 7946 0958 / 12 items", "+44 20 7946 0958");
}

#[test]
fn phone_finds_north_american_numbers() {
    assert_finds(Detector::Phone, "call (415) 555-2671", "(415) 555-2671");
    assert_finds(Detector::Phone, "call 415-555-2671, thanks", "415-555-2671");
    assert_finds(Detector::Phone, "415.555.2671", "415.555.2671");
    assert_finds(Detector::Phone, "1-800-555-0199", "1-800-555-0199");
    // A rejected candidate does not hide the real number after it.
    assert_finds(Detector::Phone, "ref 11 415-555-2671", "415-555-2671");
}

#[test]
fn phone_ignores_ids_amounts_timestamps_and_cards() {
    for text in [
        "order 20240115-000123",
        "ORD-415-555-2671",
        "amount 1234.56",
        "total 1,234,567.89",
        "ts 1700000000000",
        "2024-01-15T10:30:00Z",
        "4111111111111111",
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "123-456-7890",       // area code cannot start with 1
        "415-155-2671",       // nor the exchange
        "+1234567",           // too short
        "+12345678901234567", // longer than E.164 allows, no group to drop
        "+0 20 7946 0958",    // no country code starts with 0
        "x+44 20 7946 0958",
        "score +100 points",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
    ] {
        assert_none(Detector::Phone, text);
    }
}

// ---------------------------------------------------------------- payment card

#[test]
fn card_finds_luhn_valid_numbers_with_separators() {
    assert_finds(Detector::PaymentCard, "card 4111 1111 1111 1111 exp 12/25", "4111 1111 1111 1111");
    assert_finds(Detector::PaymentCard, "4111-1111-1111-1111", "4111-1111-1111-1111");
    assert_finds(Detector::PaymentCard, "pan=5555555555554444;", "5555555555554444");
    assert_finds(Detector::PaymentCard, "amex 3782 822463 10005", "3782 822463 10005");
    assert_finds(Detector::PaymentCard, "visa13 4222222222222.", "4222222222222");
    // The run starts with an unrelated number; the card inside is still found.
    assert_finds(Detector::PaymentCard, "ref 12 4111 1111 1111 1111", "4111 1111 1111 1111");
    assert_finds(Detector::PaymentCard, "4111 1111 1111 1111 12", "4111 1111 1111 1111");
}

#[test]
fn card_ignores_non_luhn_ids_amounts_and_timestamps() {
    for text in [
        "order 1234567812345678",       // 16 digits, fails Luhn
        "4111 1111 1111 1112",          // fails Luhn
        "ts 1700000000000",             // ms timestamp (first digit 1)
        "20240115103000123 fails luhn", // compact timestamp, fails Luhn
        "amount 1234.56",
        "4111111111111111.00",         // part of a decimal number
        "41111111111111110000",        // 20 digits: a long id, not a card
        "ORD4111111111111111",         // glued to letters
        "id-4111111111111111",         // joined to an identifier
        "2024-4111-1111-1111-1111",    // dashes bind the groups into one id
        "0000 0000 0000 0000",         // placeholder, not a card
        "7000000000000007",            // Luhn-valid, but not a payment network
        "DE89 3704 0044 0532 0130 00", // an IBAN's digits fail Luhn here
    ] {
        assert_none(Detector::PaymentCard, text);
    }
}

// ---------------------------------------------------------------- IBAN

#[test]
fn iban_finds_printed_and_electronic_forms() {
    assert_finds(Detector::Iban, "pay to GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32");
    assert_finds(Detector::Iban, "IBAN: DE89370400440532013000.", "DE89370400440532013000");
    assert_finds(Detector::Iban, "DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00");
    // Trailing upper-case words are not taken as more IBAN groups.
    assert_finds(Detector::Iban, "GB82 WEST 1234 5698 7654 32 REF", "GB82 WEST 1234 5698 7654 32");
    assert_finds(Detector::Iban, "nl91abna0417164300", "nl91abna0417164300");
}

#[test]
fn iban_ignores_look_alikes() {
    for text in [
        "GB82 WEST 1234 5698 7654 31",
        "XXGB82WEST12345698765432",
        "GB82WEST12345698765432X",
        "Gb82West12345698765432", // mixed case
        "rs232 cable is broken now",
        "AB12 CDEF GHIJ KLMN OPQR",
        "order AB1234567890123456",
    ] {
        assert_none(Detector::Iban, text);
    }
}

// ---------------------------------------------------------------- national ids

#[test]
fn national_id_finds_ssns_and_ninos() {
    assert_finds(Detector::NationalId, "ssn 536-22-1234.", "536-22-1234");
    assert_finds(Detector::NationalId, "NI AB123456C", "AB123456C");
    assert_finds(Detector::NationalId, "ni: JG 10 37 59 A", "JG 10 37 59 A");
    assert_finds(Detector::NationalId, "ab123456c", "ab123456c");
}

#[test]
fn national_id_ignores_unallocated_and_look_alikes() {
    for text in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123-45-67890",
        "9123-45-6789",
        "2024-01-15",
        "415-555-2671",
        "QQ123456C", // Q is never a first letter
        "AO123456A", // O is never a second letter
        "GB123456A", // unallocated prefix
        "AB123456E", // suffix is A-D
        "Ab123456C", // mixed case
        "XAB123456C",
    ] {
        assert_none(Detector::NationalId, text);
    }
}

// ---------------------------------------------------------------- scan

#[test]
fn scan_orders_matches_and_reports_ranges() {
    let text = "mail a@b.io, card 4111 1111 1111 1111, ssn 536-22-1234, tel +44 20 7946 0958";
    let matches = scan(text);
    let kinds: Vec<_> = matches.iter().map(|m| (m.detector, &text[m.range.clone()])).collect();
    assert_eq!(
        kinds,
        vec![
            (Detector::Email, "a@b.io"),
            (Detector::PaymentCard, "4111 1111 1111 1111"),
            (Detector::NationalId, "536-22-1234"),
            (Detector::Phone, "+44 20 7946 0958"),
        ]
    );
}

#[test]
fn scan_with_runs_only_the_given_detectors() {
    let text = "a@b.io 4111 1111 1111 1111";
    let matches = scan_with(&[Detector::PaymentCard], text);
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].detector, Detector::PaymentCard);
    assert!(scan_with(&[], text).is_empty());
}

#[test]
fn fired_names_each_detector_once() {
    let text = "a@b.io c@d.io 4111 1111 1111 1111";
    assert_eq!(fired(&Detector::ALL, text), vec![Detector::Email, Detector::PaymentCard]);
    assert!(fired(&Detector::ALL, "nothing to see, order 12345").is_empty());
}

#[test]
fn a_phone_matched_by_both_patterns_is_reported_once() {
    let text = "+1 (415) 555-2671";
    assert_eq!(found(Detector::Phone, text), vec!["+1 (415) 555-2671"]);
}

#[test]
fn non_ascii_text_is_handled_on_char_boundaries() {
    let text = "Grüße, José: josé@example.com — 4111 1111 1111 1111 €";
    for m in scan(text) {
        assert!(text.get(m.range.clone()).is_some());
    }
    assert_finds(Detector::PaymentCard, text, "4111 1111 1111 1111");
    // Glued to a non-ASCII letter: part of a word.
    assert_none(Detector::PaymentCard, "é4111111111111111");
}

fn noisy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9 +()\\-.,/_@A-Za-z]{0,80}",
        "[0-9 \\-]{0,60}",
        "[A-Z0-9 ]{0,60}",
        "(\\+?[0-9]{1,4}[ \\-()]{0,2}){0,8}",
    ]
}

proptest! {
    #[test]
    fn detectors_never_panic_and_ranges_are_valid(text in noisy_text()) {
        for m in scan(&text) {
            let found = text.get(m.range.clone());
            prop_assert!(found.is_some(), "range {:?} not on char boundaries", m.range);
            prop_assert!(!m.range.is_empty());
            let found = found.unwrap_or_default();
            match m.detector {
                Detector::PaymentCard => prop_assert!(luhn_valid(found), "{found}"),
                Detector::Iban => prop_assert!(iban_valid(found), "{found}"),
                _ => {}
            }
        }
        for d in Detector::ALL {
            let all = d.find_all(&text);
            prop_assert_eq!(d.find(&text).is_some(), !all.is_empty());
            prop_assert!(all.windows(2).all(|w| w[0].range.end <= w[1].range.start));
        }
    }

    #[test]
    fn luhn_and_mod97_never_panic(text in any::<String>()) {
        let _ = luhn_valid(&text);
        let _ = mod97(&text);
        let _ = iban_valid(&text);
    }

    #[test]
    fn a_card_in_prose_is_found(prefix in "[a-z ]{0,20}", suffix in "[a-z ]{0,20}") {
        let text = format!("{prefix} 4111 1111 1111 1111 {suffix}");
        prop_assert!(Detector::PaymentCard.find(&text).is_some());
    }
}
