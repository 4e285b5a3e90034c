//! Key vault (SQLite file and PostgreSQL table) and request validation properties.

use attest_lending::events::{FeatureKind, FeatureSpec, ModelRef};
use attest_lending::vault::KeyVault;
use attest_lending::{DecisionRequest, FeatureSchema, LendingError, ProtectedAttributes};
use proptest::prelude::*;
use serde_json::Value;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn check_vault(vault: &KeyVault) {
    let attrs = ProtectedAttributes {
        sex: Some("female".into()),
        race: None,
        age_band: Some("51-65".into()),
    };
    let sealed = vault.seal("alice", &attrs).await.unwrap();
    assert!(!sealed.ciphertext.contains("female"));
    assert_eq!(
        vault.decrypt("alice", &sealed).await.unwrap(),
        Some(attrs.clone())
    );
    // The same key serves later seals; other subjects have their own keys.
    let sealed2 = vault.seal("alice", &attrs).await.unwrap();
    assert_ne!(sealed.ciphertext, sealed2.ciphertext, "nonces must differ");
    let bob = vault.seal("bob", &attrs).await.unwrap();
    // A ciphertext cannot be opened as another subject's.
    assert!(vault.decrypt("bob", &sealed).await.is_err());
    let forged = attest_lending::events::SealedAttributes {
        key_id: "bob".into(),
        ..sealed.clone()
    };
    assert_eq!(vault.decrypt("bob", &forged).await.unwrap(), None);
    // Erasure shreds every copy; a new key afterwards does not bring them back.
    assert!(vault.erase("alice").await.unwrap());
    assert!(!vault.erase("alice").await.unwrap());
    assert_eq!(vault.decrypt("alice", &sealed).await.unwrap(), None);
    assert_eq!(vault.decrypt("alice", &sealed2).await.unwrap(), None);
    let fresh = vault.seal("alice", &attrs).await.unwrap();
    assert_eq!(vault.decrypt("alice", &sealed).await.unwrap(), None);
    assert_eq!(
        vault.decrypt("alice", &fresh).await.unwrap(),
        Some(attrs.clone())
    );
    assert_eq!(vault.decrypt("bob", &bob).await.unwrap(), Some(attrs));
    // Garbage is a typed error, not a panic.
    let junk = attest_lending::events::SealedAttributes {
        key_id: "bob".into(),
        ciphertext: "!!".into(),
    };
    assert!(matches!(
        vault.decrypt("bob", &junk).await,
        Err(LendingError::Crypto(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_vault_seals_opens_and_erases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    check_vault(&KeyVault::open_sqlite(&path).unwrap()).await;
    // Keys persist across reopen.
    let v = KeyVault::open_sqlite(&path).unwrap();
    let s = v
        .seal("carol", &ProtectedAttributes::default())
        .await
        .unwrap();
    drop(v);
    let v = KeyVault::open_sqlite(&path).unwrap();
    assert_eq!(
        v.decrypt("carol", &s).await.unwrap(),
        Some(ProtectedAttributes::default())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_vault_seals_opens_and_erases() {
    let schema = format!("h3_vault_{}", uuid::Uuid::now_v7().simple());
    let vault = KeyVault::open_postgres(PG_URL, &schema).await.unwrap();
    check_vault(&vault).await;
    // A second handle (another process) sees the same keys and erasures.
    let other = KeyVault::open_postgres(PG_URL, &schema).await.unwrap();
    let attrs = ProtectedAttributes {
        race: Some("group_c".into()),
        ..Default::default()
    };
    let s = vault.seal("dave", &attrs).await.unwrap();
    assert_eq!(other.decrypt("dave", &s).await.unwrap(), Some(attrs));
    other.erase("dave").await.unwrap();
    assert_eq!(vault.decrypt("dave", &s).await.unwrap(), None);
    assert!(KeyVault::open_postgres(PG_URL, "Bad-Schema").await.is_err());
}

fn schema() -> FeatureSchema {
    FeatureSchema {
        model: ModelRef {
            id: "credit".into(),
            version: 1,
        },
        features: attest_lending::synth::feature_specs(),
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "annual_income",
            "loan_amount",
            "debt_to_income",
            "home_ownership",
            "applicant_id",
            "features",
            "protected",
            "sex"
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "applicant_id",
                    "features",
                    "protected",
                    "annual_income",
                    "loan_amount",
                    "debt_to_income",
                    "credit_history_months",
                    "late_payments_24m",
                    "employment_years",
                    "open_credit_lines",
                    "home_ownership",
                    "sex",
                    "race",
                    "age_band",
                    "other"
                ])
                .prop_map(str::to_string),
                inner,
                0..10
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn num_in(spec: &FeatureSpec) -> BoxedStrategy<Value> {
    match spec.kind {
        FeatureKind::Integer => ((spec.min as i64)..=(spec.max as i64))
            .prop_map(Value::from)
            .boxed(),
        FeatureKind::Number => (spec.min..=spec.max).prop_map(Value::from).boxed(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Arbitrary JSON never panics: it is a typed validation error or a valid request/row.
    #[test]
    fn arbitrary_json_is_validated_without_panics(body in arb_json()) {
        match DecisionRequest::from_value(&body) {
            Ok(req) => {
                let env = req.check_envelope();
                match schema().validate(&req.features) {
                    Ok(row) => {
                        prop_assert_eq!(row.len(), 8);
                        prop_assert!(row.iter().all(|x| x.is_finite()));
                    }
                    Err(errs) => prop_assert!(!errs.is_empty()),
                }
                prop_assert!(env.iter().all(|e| !e.field.is_empty()));
            }
            Err(LendingError::Validation(errs)) => prop_assert!(!errs.is_empty()),
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
    }

    /// Values inside every range validate; one value outside its range is reported on that field.
    #[test]
    fn in_range_rows_pass_and_out_of_range_fails(
        values in schema().features.iter().map(num_in).collect::<Vec<_>>(),
        which in 0usize..8,
    ) {
        let s = schema();
        let mut m = serde_json::Map::new();
        for (spec, v) in s.features.iter().zip(&values) {
            m.insert(spec.name.clone(), v.clone());
        }
        prop_assert!(s.validate(&m).is_ok());
        let spec = &s.features[which];
        m.insert(spec.name.clone(), Value::from(spec.max + 1.0));
        let errs = s.validate(&m).unwrap_err();
        prop_assert_eq!(errs.len(), 1);
        prop_assert_eq!(&errs[0].field, &format!("features.{}", spec.name));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// seal → decrypt is the identity for any attributes and subject.
    #[test]
    fn seal_open_roundtrip(
        subject in "[A-Za-z0-9_.-]{1,40}",
        sex in proptest::option::of("\\PC{1,20}"),
        race in proptest::option::of("\\PC{1,20}"),
        age_band in proptest::option::of("\\PC{1,20}"),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let vault = KeyVault::open_sqlite(dir.path().join("k.db")).unwrap();
        let attrs = ProtectedAttributes { sex, race, age_band };
        let back = rt.block_on(async {
            let s = vault.seal(&subject, &attrs).await.unwrap();
            vault.decrypt(&subject, &s).await.unwrap()
        });
        prop_assert_eq!(back, Some(attrs));
    }
}
