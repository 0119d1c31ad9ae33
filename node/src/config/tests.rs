// figment's Jail returns its own large error type.
#![allow(clippy::result_large_err)]
use super::*;

#[test]
fn example_file_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rethink.example.toml");
    let raw = RawConfig::figment(Some(&path), Env::prefixed("RETHINK_TEST_UNUSED_"))
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = raw.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.domain, "example.com");
    assert_eq!(cfg.session.max_frame_bytes, 1024 * 1024);
    assert_eq!(cfg.auth.tokens.len(), 1);
    assert_eq!(cfg.matrix.server_name.as_str(), "example.com");
    assert!(cfg.matrix.registration_enabled);
    assert_eq!(cfg.matrix.presence, PresenceConfig::default());
    assert_eq!(cfg.matrix.presence.idle_timeout, Duration::from_secs(300));
    assert_eq!(cfg.server, ServerConfig::default());
}

#[test]
fn defaults_need_no_file() {
    let cfg = RawConfig::default()
        .validate()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen.port(), 8900);
    assert_eq!(cfg.data_dir, PathBuf::from("./data"));
    assert!(cfg.auth.allow_anonymous);
    assert_eq!(cfg.matrix.server_name.as_str(), "localhost");
    assert!(cfg.matrix.registration_enabled);
    assert!(cfg.matrix.jwt_create_accounts);
    assert_eq!(cfg.matrix.presence.offline_timeout, Duration::from_secs(30));
    // A quarter of 30 s is more than the 5 s ceiling.
    assert_eq!(cfg.matrix.presence.sweep_interval(), Duration::from_secs(5));
}

#[test]
fn environment_overrides_nested_settings() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("RETHINK_SESSION__RATE_PER_SECOND", "7");
        jail.set_env("RETHINK_DOMAIN", "env.example");
        let cfg = RawConfig::load(None)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())?;
        assert_eq!(cfg.session.rate_per_second, 7);
        assert_eq!(cfg.domain, "env.example");
        Ok(())
    });
}

#[test]
fn invalid_settings_are_named() {
    let cases: Vec<(RawConfig, &str)> = vec![
        (
            RawConfig {
                listen: "nowhere".into(),
                ..RawConfig::default()
            },
            "setting `listen`",
        ),
        (
            RawConfig {
                domain: "bad domain".into(),
                ..RawConfig::default()
            },
            "setting `domain`",
        ),
        (
            RawConfig {
                session: RawSession {
                    rate_per_second: 0,
                    ..RawSession::default()
                },
                ..RawConfig::default()
            },
            "setting `session.rate_per_second`",
        ),
        (
            RawConfig {
                matrix: RawMatrix {
                    server_name: Some("bad name".into()),
                    ..RawMatrix::default()
                },
                ..RawConfig::default()
            },
            "setting `matrix.server_name`",
        ),
        (
            RawConfig {
                matrix: RawMatrix {
                    presence: RawPresence {
                        offline_timeout_ms: 0,
                        ..RawPresence::default()
                    },
                    ..RawMatrix::default()
                },
                ..RawConfig::default()
            },
            "setting `matrix.presence.offline_timeout_ms`",
        ),
        (
            RawConfig {
                server: RawServer {
                    header_timeout_ms: 0,
                    ..RawServer::default()
                },
                ..RawConfig::default()
            },
            "setting `server.header_timeout_ms`",
        ),
        (
            RawConfig {
                server: RawServer {
                    max_connections: 0,
                    ..RawServer::default()
                },
                ..RawConfig::default()
            },
            "setting `server.max_connections`",
        ),
        (
            RawConfig {
                server: RawServer {
                    shutdown_timeout_secs: 0,
                    ..RawServer::default()
                },
                ..RawConfig::default()
            },
            "setting `server.shutdown_timeout_secs`",
        ),
    ];
    for (raw, want) in cases {
        let err = raw.validate().expect_err(want).to_string();
        assert!(err.contains(want), "{err}");
    }
    figment::Jail::expect_with(|jail| {
        jail.set_env("RETHINK_SESSION__NO_SUCH_SETTING", "1");
        let err = RawConfig::load(None)
            .expect_err("unknown setting")
            .to_string();
        assert!(err.contains("no_such_setting"), "{err}");
        Ok(())
    });
}

#[test]
fn appservices_ca_file_is_read_from_the_environment_and_checked() {
    figment::Jail::expect_with(|jail| {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .map_err(|e| e.to_string())?;
        jail.create_file("ca.pem", &key.cert.pem())?;
        jail.create_file("empty.pem", "")?;
        jail.set_env("RETHINK_APPSERVICES__CA_FILE", "ca.pem");
        let cfg = RawConfig::load(None)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())?;
        assert_eq!(cfg.appservices.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(cfg.appservices.extra_roots.len(), 1);
        jail.set_env("RETHINK_APPSERVICES__CA_FILE", "empty.pem");
        let e = RawConfig::load(None)
            .map_err(|e| e.to_string())?
            .validate()
            .expect_err("no certificate");
        let text = e.to_string();
        assert!(
            text.contains("setting `appservices.ca_file`") && text.contains("no certificate"),
            "{text}"
        );
        Ok(())
    });
}
