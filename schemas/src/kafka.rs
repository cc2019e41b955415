//! librdkafka client settings written in a manifest: plain `properties` and
//! `secrets` read from the environment or a file.
//!
//! Every Kafka client switchyard makes (the source, the results and DLQ
//! producer, the feedback consumer, the retrain-trigger producer, a
//! backfill's offset-range reader) takes both maps. A secret property
//! (`sasl.password`, key passwords, …) written in plain text under
//! `properties` is a manifest problem; under `secrets` it names where the
//! value is, and the value reaches librdkafka only.

use std::collections::BTreeMap;
use std::path::Path;

use crate::secret::SecretSource;
use crate::Problems;

/// librdkafka properties whose values are secrets: refused under
/// `properties`, read from `secrets`.
pub const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
];

/// Whether `key` sets up the connection to the cluster (TLS, SASL): a
/// producer writing to the source's cluster inherits these from the source.
pub fn is_connection_property(key: &str) -> bool {
    ["security.", "sasl.", "ssl.", "ssl_", "enable.ssl.", "enable.sasl."].iter().any(|p| key.starts_with(p))
}

/// Reports the shape problems of one client's `properties` and `secrets`
/// under `path`.
pub fn check(
    path: &str,
    properties: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretSource>,
    problems: &mut Problems,
) {
    for k in properties.keys() {
        if SECRET_PROPERTIES.contains(&k.as_str()) {
            problems.push(
                format!("{path}.properties.{k}"),
                format!(
                    "is a secret and must not be written in the manifest: give it under `{path}.secrets` as \
                     `{k}: {{ env: VARIABLE }}` or `{k}: {{ file: path }}`"
                ),
            );
        }
        if secrets.contains_key(k) {
            problems.push(format!("{path}.properties.{k}"), format!("is also given under `{path}.secrets`"));
        }
    }
    for (k, s) in secrets {
        if s.env.is_some() == s.file.is_some() {
            problems.push(format!("{path}.secrets.{k}"), "give exactly one of `env` and `file`");
        }
    }
}

/// Reports every secret of `secrets` that cannot be read now (a variable not
/// set, a file missing or empty); relative files are taken from `base`.
pub fn check_readable(path: &str, secrets: &BTreeMap<String, SecretSource>, base: &Path, problems: &mut Problems) {
    for (k, s) in secrets {
        if s.env.is_some() != s.file.is_some() {
            if let Err(e) = s.load(base) {
                problems.push(format!("{path}.secrets.{k}"), e);
            }
        }
    }
}

/// Makes the relative files of `secrets` relative to `base`.
pub fn rebase(secrets: &mut BTreeMap<String, SecretSource>, base: &Path) {
    for s in secrets.values_mut() {
        s.rebase(base);
    }
}

/// The settings to hand librdkafka: `properties`, then each secret's value.
/// The error names the secret and where it was looked for, never a value.
pub fn settings(
    path: &str,
    properties: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretSource>,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, s) in secrets {
        let secret = s.load(Path::new(".")).map_err(|e| format!("{path}.secrets.{k}: {e}"))?;
        out.push((k.clone(), secret.expose().to_string()));
    }
    Ok(out)
}

/// Copies the connection properties and the secrets of one client (the
/// source) into another that talks to the same cluster, keeping what the
/// other sets itself.
pub fn inherit(
    properties: &mut BTreeMap<String, String>,
    secrets: &mut BTreeMap<String, SecretSource>,
    from_properties: &BTreeMap<String, String>,
    from_secrets: &BTreeMap<String, SecretSource>,
) {
    for (k, v) in from_properties {
        if is_connection_property(k) && !secrets.contains_key(k) {
            properties.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for (k, s) in from_secrets {
        if !properties.contains_key(k) {
            secrets.entry(k.clone()).or_insert_with(|| s.clone());
        }
    }
}

/// How a client connects, for error messages: `security.protocol` and,
/// with SASL, `sasl.mechanism` (librdkafka's defaults when unset).
pub fn describe(properties: &BTreeMap<String, String>) -> String {
    let get = |k: &str| properties.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
    let protocol = get("security.protocol").unwrap_or("plaintext").to_ascii_uppercase();
    if protocol.starts_with("SASL") {
        let mechanism = get("sasl.mechanism").or_else(|| get("sasl.mechanisms")).unwrap_or("GSSAPI");
        format!("security.protocol {protocol}, sasl.mechanism {mechanism}")
    } else {
        format!("security.protocol {protocol}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn env(var: &str) -> SecretSource {
        SecretSource { env: Some(var.into()), file: None }
    }

    #[test]
    fn plain_text_secrets_are_problems_named_with_their_path() {
        let p = props(&[("sasl.password", "hunter2"), ("sasl.username", "alice"), ("ssl.key.password", "x")]);
        let mut s = BTreeMap::new();
        s.insert("sasl.username".to_string(), env("U"));
        s.insert("ssl.keystore.password".to_string(), SecretSource { env: None, file: None });
        let mut problems = Problems::new();
        check("source", &p, &s, &mut problems);
        let text = problems.to_string();
        assert!(text.contains("source.properties.sasl.password: is a secret"), "{text}");
        assert!(text.contains("source.properties.ssl.key.password: is a secret"), "{text}");
        assert!(text.contains("source.properties.sasl.username: is also given under `source.secrets`"), "{text}");
        assert!(text.contains("source.secrets.ssl.keystore.password: give exactly one"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(problems.items().len(), 4, "{text}");
    }

    #[test]
    fn settings_read_secrets_and_errors_name_the_secret_not_the_value() {
        std::env::set_var("SY_KAFKA_TEST_PW", "s3cret");
        let p = props(&[("security.protocol", "SASL_SSL")]);
        let mut s = BTreeMap::new();
        s.insert("sasl.password".to_string(), env("SY_KAFKA_TEST_PW"));
        let got = settings("source", &p, &s).unwrap();
        assert!(got.contains(&("sasl.password".into(), "s3cret".into())));
        s.insert("ssl.key.password".to_string(), env("SY_KAFKA_TEST_UNSET"));
        let e = settings("sinks.kafka", &p, &s).unwrap_err();
        assert!(
            e.starts_with("sinks.kafka.secrets.ssl.key.password: env: environment variable `SY_KAFKA_TEST_UNSET`"),
            "{e}"
        );
        let mut problems = Problems::new();
        check_readable("source", &s, Path::new("."), &mut problems);
        assert_eq!(problems.items().len(), 1, "{problems}");
    }

    #[test]
    fn a_producer_on_the_same_cluster_inherits_the_connection_only() {
        let from = props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("ssl.ca.location", "/ca.pem"),
            ("auto.offset.reset", "latest"),
        ]);
        let mut from_s = BTreeMap::new();
        from_s.insert("sasl.password".to_string(), env("PW"));
        let mut own = props(&[("sasl.mechanism", "PLAIN")]);
        let mut own_s = BTreeMap::new();
        inherit(&mut own, &mut own_s, &from, &from_s);
        assert_eq!(own["security.protocol"], "SASL_SSL");
        assert_eq!(own["sasl.mechanism"], "PLAIN", "its own setting stays");
        assert_eq!(own["ssl.ca.location"], "/ca.pem");
        assert!(!own.contains_key("auto.offset.reset"), "consumer settings are not inherited");
        assert_eq!(own_s["sasl.password"], env("PW"));
        assert_eq!(describe(&own), "security.protocol SASL_SSL, sasl.mechanism PLAIN");
        assert_eq!(describe(&BTreeMap::new()), "security.protocol PLAINTEXT");
    }
}
