//! End-to-end tests of [`Auth`] through its public API, on real files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::Algorithm;

use super::token::tests::{forge, unsigned};
use super::*;
use crate::error::{BrokerError, ErrorCode};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ADMIN_PASSWORD: &str = "admin password";

fn config() -> AuthConfig {
    AuthConfig {
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        ..AuthConfig::default()
    }
}

fn open(dir: &Path) -> Auth {
    Auth::open(dir, &config()).unwrap().0
}

fn principal(name: &str) -> Principal {
    Principal {
        name: name.to_owned(),
        issued_at: 0,
    }
}

fn secret(dir: &Path) -> Vec<u8> {
    let text = fs::read_to_string(dir.join(SECRET_FILE_NAME)).unwrap();
    text.trim_end().as_bytes().to_vec()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn refusal(result: Result<Principal, crate::error::ApiError>) -> String {
    let error = result.unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthorized, "{error}");
    error.message
}

#[test]
fn first_start_with_a_configured_password_creates_admin() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (auth, bootstrap) = Auth::open(dir.path(), &config())?;
    assert_eq!(bootstrap.created_admin_password, None);
    let users = auth.users();
    assert_eq!(users.len(), 1);
    assert_eq!(
        (users[0].name.as_str(), users[0].admin),
        (BOOTSTRAP_ADMIN_NAME, true)
    );
    let token = auth.issue_token("admin", ADMIN_PASSWORD)?;
    assert_eq!(auth.verify(&token.access_token)?.name, "admin");
    let stored = fs::read_to_string(dir.path().join(USERS_FILE_NAME))?;
    assert!(!stored.contains(ADMIN_PASSWORD));
    assert!(stored.contains("$argon2id$"));
    Ok(())
}

#[test]
fn first_start_without_a_password_generates_one_and_reports_it_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (auth, bootstrap) = Auth::open(dir.path(), &AuthConfig::default())?;
    let password = bootstrap.created_admin_password.clone().unwrap();
    assert_eq!(password.len(), 24);
    assert!(!format!("{bootstrap:?}").contains(&password));
    auth.issue_token("admin", &password)?;
    let stored = fs::read_to_string(dir.path().join(USERS_FILE_NAME))?;
    assert!(!stored.contains(&password));
    drop(auth);
    // A second start finds the user and neither reports nor changes a password,
    // also when a password is configured by then.
    let (auth, again) = Auth::open(dir.path(), &config())?;
    assert_eq!(again.created_admin_password, None);
    auth.issue_token("admin", &password)?;
    assert!(auth.issue_token("admin", ADMIN_PASSWORD).is_err());
    Ok(())
}

#[test]
fn an_empty_admin_password_is_ignored_once_users_exist() -> TestResult {
    let dir = tempfile::tempdir()?;
    let empty = AuthConfig {
        admin_password: Some(String::new()),
        ..AuthConfig::default()
    };
    let refused = Auth::open(dir.path(), &empty)
        .err()
        .ok_or("an empty password made admin")?;
    assert!(matches!(refused, BrokerError::Config(_)), "{refused}");
    assert!(!dir.path().join(USERS_FILE_NAME).exists());
    drop(open(dir.path()));
    let (auth, bootstrap) = Auth::open(dir.path(), &empty)?;
    assert_eq!(bootstrap.created_admin_password, None);
    auth.issue_token("admin", ADMIN_PASSWORD)?;
    Ok(())
}

#[test]
fn a_users_file_with_no_users_is_bootstrapped_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    fs::write(
        dir.path().join(USERS_FILE_NAME),
        r#"{"version": 1, "users": []}"#,
    )?;
    let (auth, _) = Auth::open(dir.path(), &config())?;
    auth.issue_token("admin", ADMIN_PASSWORD)?;
    assert_eq!(mode(&dir.path().join(USERS_FILE_NAME)), 0o600);
    Ok(())
}

#[test]
fn files_are_created_with_mode_0600() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let auth = open(&data);
    auth.add_user("bob", "pw", false)?;
    assert_eq!(mode(&data.join(USERS_FILE_NAME)), SECRET_FILE_MODE);
    assert_eq!(mode(&data.join(SECRET_FILE_NAME)), SECRET_FILE_MODE);
    let lock = data.join(USERS_FILE_NAME).with_extension("lock");
    assert_eq!(mode(&lock), SECRET_FILE_MODE);
    let names: Vec<_> = fs::read_dir(&data)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names.len(), 3, "no temporary file is left: {names:?}");
    Ok(())
}

#[test]
fn wrong_names_and_wrong_passwords_get_the_same_answer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    auth.add_user("bob", "right", false)?;
    let wrong_password = auth.issue_token("bob", "wrong").unwrap_err();
    let wrong_name = auth.issue_token("nobody", "right").unwrap_err();
    assert_eq!(wrong_password, wrong_name);
    assert_eq!(wrong_name.code, ErrorCode::Unauthorized);
    assert_eq!(wrong_name.message, "invalid username or password");
    let long = "x".repeat(PASSWORD_BYTES_MAX + 1);
    assert_eq!(auth.issue_token("bob", &long).unwrap_err(), wrong_name);
    Ok(())
}

#[test]
fn tokens_say_bearer_and_their_lifetime() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = AuthConfig {
        token_ttl_secs: 120,
        ..config()
    };
    let (auth, _) = Auth::open(dir.path(), &config)?;
    let token = auth.issue_token("admin", ADMIN_PASSWORD)?;
    assert_eq!((token.token_type, token.expires_in), ("Bearer", 120));
    let json = serde_json::to_value(&token)?;
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 120);
    let other = auth.issue_token("admin", ADMIN_PASSWORD)?;
    assert_ne!(token.access_token, other.access_token);
    Ok(())
}

#[test]
fn expired_forged_unsigned_and_other_algorithm_tokens_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    let key = secret(dir.path());
    assert!(
        auth.verify(&forge(&key, Algorithm::HS256, "admin", 0, 60))
            .is_ok()
    );
    let expired = forge(&key, Algorithm::HS256, "admin", 7200, 3600);
    assert!(refusal(auth.verify(&expired)).contains("expired"));
    let forged = forge(
        b"not the broker's secret, but long",
        Algorithm::HS256,
        "admin",
        0,
        60,
    );
    assert!(refusal(auth.verify(&forged)).contains("signature"));
    assert!(refusal(auth.verify(&unsigned("admin"))).contains("unsigned"));
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = forge(&key, alg, "admin", 0, 60);
        assert!(refusal(auth.verify(&token)).contains("HS256"));
    }
    assert!(refusal(auth.verify("garbage")).contains("malformed"));
    let message = refusal(auth.verify(&forged));
    assert!(!message.contains(&String::from_utf8(key)?));
    Ok(())
}

#[test]
fn a_removed_users_token_stops_working_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    auth.add_user("bob", "pw", false)?;
    let token = auth.issue_token("bob", "pw")?.access_token;
    assert_eq!(auth.verify(&token)?.name, "bob");
    auth.remove_user("bob")?;
    assert!(refusal(auth.verify(&token)).contains("no longer exists"));
    assert_eq!(
        auth.remove_user("bob").unwrap_err().code,
        ErrorCode::NotFound
    );
    Ok(())
}

#[test]
fn tokens_older_than_the_password_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    auth.add_user("bob", "old", false)?;
    let key = secret(dir.path());
    // Issued (by this key) ten seconds ago, before bob's password was set.
    let earlier = forge(&key, Algorithm::HS256, "bob", 10, 3600);
    assert!(refusal(auth.verify(&earlier)).contains("password"));
    auth.set_password("bob", "new")?;
    assert!(auth.issue_token("bob", "old").is_err());
    let token = auth.issue_token("bob", "new")?;
    assert_eq!(auth.verify(&token.access_token)?.name, "bob");
    assert_eq!(
        auth.set_password("nobody", "x").unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        auth.set_password("bob", "").unwrap_err().code,
        ErrorCode::BadRequest
    );
    Ok(())
}

#[test]
fn add_user_checks_name_password_and_uniqueness() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    auth.add_user("bob", "pw", false)?;
    assert_eq!(
        auth.add_user("bob", "pw", false).unwrap_err().code,
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        auth.add_user("b/ob", "pw", false).unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        auth.add_user("", "pw", false).unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        auth.add_user("carol", "", false).unwrap_err().code,
        ErrorCode::BadRequest
    );
    let names: Vec<_> = auth.users().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["admin", "bob"]);
    Ok(())
}

#[test]
fn the_last_admin_cannot_be_removed_or_demoted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    assert_eq!(
        auth.remove_user("admin").unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        auth.set_admin("admin", false).unwrap_err().code,
        ErrorCode::BadRequest
    );
    auth.add_user("root", "pw", true)?;
    auth.remove_user("admin")?;
    Ok(())
}

#[test]
fn grants_take_effect_at_once_for_existing_tokens() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    auth.add_user("bob", "pw", false)?;
    let bob = auth.verify(&auth.issue_token("bob", "pw")?.access_token)?;
    let produce = Grant::new(ResourceKind::Topic, "orders.*", Action::Produce);
    let orders_eu = Resource::Topic("orders.eu");

    assert!(!auth.can(&bob, Action::Produce, orders_eu));
    let denied = auth
        .authorize(&bob, Action::Produce, orders_eu)
        .unwrap_err();
    assert_eq!(denied.code, ErrorCode::Forbidden);
    assert_eq!(
        denied.message,
        r#"user "bob" may not produce on topic "orders.eu""#
    );

    auth.grant("bob", produce.clone())?;
    auth.authorize(&bob, Action::Produce, orders_eu)?;
    assert!(!auth.can(&bob, Action::Consume, orders_eu));
    assert!(!auth.can(&bob, Action::Produce, Resource::Queue("orders.eu")));
    assert!(!auth.can(&bob, Action::Produce, Resource::Topic("orders")));
    assert!(auth.can_see(&bob, orders_eu));
    assert!(!auth.can_see(&bob, Resource::Topic("payments")));

    assert_eq!(auth.revoke("bob", &produce), Ok(true));
    assert_eq!(auth.revoke("bob", &produce), Ok(false));
    assert!(!auth.can(&bob, Action::Produce, orders_eu));
    assert!(!auth.can_see(&bob, orders_eu));
    Ok(())
}

#[test]
fn admin_grants_exact_names_and_the_cluster() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    auth.add_user("ops", "pw", false)?;
    let ops = principal("ops");
    auth.grant(
        "ops",
        Grant::new(ResourceKind::Queue, "jobs", Action::Admin),
    )?;
    auth.grant("ops", Grant::new(ResourceKind::Queue, "*", Action::Consume))?;
    assert!(auth.can(&ops, Action::Admin, Resource::Queue("jobs")));
    assert!(!auth.can(&ops, Action::Admin, Resource::Queue("jobs2")));
    assert!(!auth.can(&ops, Action::Produce, Resource::Queue("jobs")));
    assert!(auth.can(&ops, Action::Consume, Resource::Queue("anything")));
    assert!(auth.can_see(&ops, Resource::Queue("anything")));
    assert!(!auth.can_see(&ops, Resource::Topic("anything")));
    let denied = auth
        .authorize(&ops, Action::Admin, Resource::Cluster)
        .unwrap_err();
    assert_eq!(denied.code, ErrorCode::Forbidden);
    assert!(denied.message.contains("\"ops\"") && denied.message.contains("the cluster"));

    let admin = principal("admin");
    for action in Action::ALL {
        auth.authorize(&admin, action, Resource::Cluster)?;
        auth.authorize(&admin, action, Resource::Topic("x"))?;
        auth.authorize(&admin, action, Resource::Queue("y"))?;
    }
    assert!(!auth.can(&principal("ghost"), Action::Produce, Resource::Topic("x")));
    Ok(())
}

#[test]
fn grant_and_revoke_check_user_and_pattern() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    let grant = Grant::new(ResourceKind::Topic, "t", Action::Consume);
    assert_eq!(
        auth.grant("nobody", grant.clone()).unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        auth.revoke("nobody", &grant).unwrap_err().code,
        ErrorCode::NotFound
    );
    let bad = Grant::new(ResourceKind::Topic, "a*b", Action::Consume);
    assert_eq!(
        auth.grant("admin", bad).unwrap_err().code,
        ErrorCode::BadRequest
    );
    Ok(())
}

#[test]
fn users_grants_and_tokens_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let grant = Grant::new(ResourceKind::Queue, "jobs.*", Action::Consume);
    let (token, fingerprint, receipt_key) = {
        let auth = open(dir.path());
        auth.add_user("bob", "pw", false)?;
        auth.grant("bob", grant.clone())?;
        let token = auth.issue_token("bob", "pw")?.access_token;
        (token, auth.signing_key_fingerprint(), auth.receipt_key())
    };
    let auth = open(dir.path());
    assert_eq!(auth.signing_key_fingerprint(), fingerprint);
    assert_eq!(auth.receipt_key(), receipt_key);
    let bob = auth.verify(&token)?;
    assert!(auth.can(&bob, Action::Consume, Resource::Queue("jobs.eu")));
    assert_eq!(
        auth.user("bob"),
        Some(UserInfo {
            name: "bob".to_owned(),
            admin: false,
            grants: vec![grant]
        })
    );
    auth.issue_token("bob", "pw")?;
    Ok(())
}

#[test]
fn nodes_sharing_a_configured_secret_accept_each_others_tokens() -> TestResult {
    let (one, two) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let config = AuthConfig {
        jwt_secret: Some("a shared secret of 32 bytes or more".to_owned()),
        ..config()
    };
    let (a, _) = Auth::open(one.path(), &config)?;
    let (b, _) = Auth::open(two.path(), &config)?;
    assert!(!one.path().join(SECRET_FILE_NAME).exists());
    assert_eq!(a.signing_key_fingerprint(), b.signing_key_fingerprint());
    assert_eq!(a.receipt_key(), b.receipt_key());
    let token = a.issue_token("admin", ADMIN_PASSWORD)?;
    assert_eq!(b.verify(&token.access_token)?.name, "admin");
    let (c, _) = Auth::open(tempfile::tempdir()?.path(), &super::tests::config())?;
    assert_ne!(c.signing_key_fingerprint(), a.signing_key_fingerprint());
    assert!(c.verify(&token.access_token).is_err());
    Ok(())
}

#[test]
fn fingerprint_is_short_and_not_the_secret() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = open(dir.path());
    let fingerprint = auth.signing_key_fingerprint();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 23,
        "{fingerprint}"
    );
    let key = String::from_utf8(secret(dir.path()))?;
    assert!(!key.contains(&fingerprint["sha256:".len()..]));
    assert!(!format!("{auth:?}").contains(&key));
    Ok(())
}

#[test]
fn a_corrupt_users_file_is_an_error_naming_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(open(dir.path()));
    let path = dir.path().join(USERS_FILE_NAME);
    fs::write(&path, b"{\"version\": 1, \"users\": [{\"name\": ")?;
    let error = Auth::open(dir.path(), &config()).unwrap_err();
    assert!(matches!(error, BrokerError::BadMetadata { .. }), "{error}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_corrupt_secret_file_is_an_error_naming_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(SECRET_FILE_NAME);
    fs::write(&path, b"too short\n")?;
    let error = Auth::open(dir.path(), &config()).unwrap_err();
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    Ok(())
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthConfig {
        token_ttl_secs: 0,
        ..config()
    };
    assert!(matches!(
        Auth::open(dir.path(), &config),
        Err(BrokerError::Config(_))
    ));
}

#[test]
fn concurrent_changes_are_all_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let auth = Arc::new(open(dir.path()));
    auth.add_user("bob", "pw", false)?;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let auth = Arc::clone(&auth);
            std::thread::spawn(move || {
                let grant = Grant::new(ResourceKind::Topic, format!("t{i}"), Action::Produce);
                auth.grant("bob", grant)
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap()?;
    }
    assert_eq!(auth.user("bob").unwrap().grants.len(), 8);
    drop(auth);
    assert_eq!(open(dir.path()).user("bob").unwrap().grants.len(), 8);
    Ok(())
}

#[test]
fn concurrent_changes_of_separate_processes_are_all_kept() -> TestResult {
    // Each `Auth` is what one process holds (`broker serve`, `broker acl grant`):
    // its own table and its own in-process lock; only the file lock orders them.
    let dir = tempfile::tempdir()?;
    open(dir.path()).add_user("bob", "pw", false)?;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let auth = open(dir.path());
            std::thread::spawn(move || {
                (0..5).try_for_each(|j| {
                    let grant =
                        Grant::new(ResourceKind::Topic, format!("t{i}-{j}"), Action::Produce);
                    auth.grant("bob", grant)
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap()?;
    }
    assert_eq!(open(dir.path()).user("bob").unwrap().grants.len(), 40);
    Ok(())
}

#[test]
fn another_processes_changes_are_reloaded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = open(dir.path());
    assert!(!server.reload_if_changed()?, "nothing changed since open");
    let operator = open(dir.path());
    operator.add_user("bob", "bob's password", false)?;
    assert_eq!(server.user("bob"), None);
    assert!(server.reload_if_changed()?);
    assert!(server.user("bob").is_some());
    assert!(server.issue_token("bob", "bob's password").is_ok());
    assert!(!server.reload_if_changed()?, "one reload per change");
    operator.remove_user("bob")?;
    assert!(server.reload_if_changed()?);
    assert_eq!(server.user("bob"), None);
    Ok(())
}

#[test]
fn a_change_builds_on_the_file_another_process_changed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = open(dir.path());
    let operator = open(dir.path());
    operator.add_user("bob", "pw", false)?;
    // No reload in between: the change itself must see bob.
    server.add_user("carol", "pw", false)?;
    let names: Vec<String> = open(dir.path())
        .users()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["admin", "bob", "carol"]);
    Ok(())
}

#[test]
fn a_damaged_file_is_reported_once_and_the_users_stay() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = open(dir.path());
    let path = dir.path().join(USERS_FILE_NAME);
    let good = fs::read(&path)?;
    fs::write(&path, b"{\"version\": 1, \"users\": [")?;
    let error = server.reload_if_changed().unwrap_err();
    assert!(matches!(error, BrokerError::BadMetadata { .. }), "{error}");
    assert!(!server.reload_if_changed()?, "reported once");
    assert!(
        server
            .issue_token(BOOTSTRAP_ADMIN_NAME, ADMIN_PASSWORD)
            .is_ok()
    );
    assert!(
        server.add_user("bob", "pw", false).is_err(),
        "a change must not overwrite a file it cannot read"
    );
    fs::remove_file(&path)?;
    assert!(
        server.reload_if_changed().is_err(),
        "a missing file is reported"
    );
    assert!(!server.reload_if_changed()?);
    server.add_user("bob", "pw", false)?;
    assert!(
        open(dir.path()).user("bob").is_some(),
        "the change wrote the file anew"
    );
    fs::write(&path, good)?;
    assert!(server.reload_if_changed()?);
    assert_eq!(server.user("bob"), None, "the file as written wins");
    Ok(())
}
