//! The API-key table in PostgreSQL (127.0.0.1:5432, user postgres, database `test`).

use attest_server::{auth::parse_scopes, KeyStore, Scope};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[tokio::test]
async fn postgres_keys_create_verify_list_revoke() {
    let schema = format!("keys_test_{}", std::process::id());
    let store = KeyStore::open_postgres(URL, &schema).await.unwrap();
    // Opening twice (a second process) is fine.
    let again = KeyStore::open_postgres(URL, &schema).await.unwrap();
    assert!(!store.has_active_keys().await.unwrap());
    let k = store
        .create("ops", &parse_scopes("decide,admin").unwrap())
        .await
        .unwrap();
    let info = again.verify(&k.key).await.unwrap().unwrap();
    assert!(info.allows(Scope::Read), "admin grants every scope");
    assert_eq!(info.name, "ops");
    assert_eq!(again.list().await.unwrap().len(), 1);
    assert!(again.has_active_keys().await.unwrap());
    let wrong = format!("{}_{}", &k.key[..20], "0".repeat(64));
    assert!(store.verify(&wrong).await.unwrap().is_none());
    assert!(store.revoke(&k.info.id).await.unwrap());
    assert!(again.verify(&k.key).await.unwrap().is_none());
    assert!(!store.has_active_keys().await.unwrap());
    let listed = store.list().await.unwrap();
    assert!(listed[0].revoked_at.is_some());
    assert!(KeyStore::open_postgres(URL, "Bad-Schema").await.is_err());

    // Clean up.
    let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_first_opens_all_succeed() {
    let schema = format!("keys_race_{}", std::process::id());
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { KeyStore::open_postgres(URL, &schema).await })
        })
        .collect();
    let mut stores = Vec::new();
    for h in opens {
        stores.push(h.await.unwrap().unwrap());
    }
    let k = stores[0]
        .create("race", &parse_scopes("read").unwrap())
        .await
        .unwrap();
    for s in &stores {
        assert!(s.verify(&k.key).await.unwrap().is_some());
    }
    let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}
