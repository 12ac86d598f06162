//! Dex (OIDC) authentication: the adapter against the simulated Dex, and end to end.

use std::sync::Arc;

use base64::Engine;
use packetcapture_dex::{DexAuthenticator, DexConfig, IssuerRouted};
use packetcapture_domain::testing::TokenTable;
use packetcapture_domain::{Authenticator, BearerToken, Error, User};
use packetcapture_tests::dex::{CLIENT_ID, now, sign_with};
use serde_json::{Value, json};

use crate::support::*;

fn config(sim: &TestSim) -> DexConfig {
    DexConfig {
        enabled: true,
        issuer: sim.dex.issuer().parse().unwrap(),
        client_id: CLIENT_ID.into(),
        jwk_url: format!("{}/keys", sim.dex.issuer()).parse().unwrap(),
        ca_file: Some(sim.out.join("dex-ca.crt")),
        ..DexConfig::default()
    }
}

fn claims(sim: &TestSim) -> Value {
    let t = now();
    json!({"iss": sim.dex.issuer(), "aud": CLIENT_ID, "sub": "CgNkYW5h", "email": "dana@example.com",
           "email_verified": true, "groups": ["capture-readers"], "iat": t, "exp": t + 600})
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

async fn check(dex: &DexAuthenticator, token: &str) -> Result<User, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    dex.authenticate(&BearerToken::new(token).unwrap()).await
}

fn refused(result: Result<User, Error>, why: &str) {
    match result {
        Err(Error::Unauthenticated { reason }) => {
            assert!(reason.contains(why), "{reason:?} should say {why:?}")
        }
        other => panic!("expected a refusal saying {why:?}, got {other:?}"),
    }
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_gives_the_user_its_groups_and_extra() {
    let sim = start_default().await;
    let dex = DexAuthenticator::new(config(&sim)).unwrap();
    let user = check(&dex, &sim.token("dana@example.com")).await.unwrap();
    assert_eq!(user.name, "dana@example.com");
    assert_eq!(user.groups, ["capture-readers"]);
    assert_eq!(user.extra["iss"], [sim.dex.issuer().to_owned()]);
    assert!(user.extra.contains_key("sub"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_audience_and_claims_are_checked() {
    let sim = start_default().await;
    let dex = DexAuthenticator::new(config(&sim)).unwrap();
    let t = now();
    refused(
        check(
            &dex,
            &sim.dex.sign(&with(claims(&sim), json!({"exp": t - 120}))),
        )
        .await,
        "expired",
    );
    check(
        &dex,
        &sim.dex.sign(&with(claims(&sim), json!({"exp": t - 10}))),
    )
    .await
    .expect("within the leeway");
    refused(
        check(
            &dex,
            &sim.dex.sign(&with(claims(&sim), json!({"nbf": t + 300}))),
        )
        .await,
        "not valid yet",
    );
    refused(
        check(
            &dex,
            &sim.dex
                .sign(&with(claims(&sim), json!({"aud": "someone-else"}))),
        )
        .await,
        "not for this client",
    );
    refused(
        check(
            &dex,
            &sim.dex.sign(&with(claims(&sim), json!({"email": null}))),
        )
        .await,
        "no email claim",
    );
    refused(
        check(
            &dex,
            &sim.dex
                .sign(&with(claims(&sim), json!({"email_verified": false}))),
        )
        .await,
        "not verified",
    );
    refused(
        check(
            &dex,
            &sim.dex.sign(&with(claims(&sim), json!({"groups": [1, 2]}))),
        )
        .await,
        "not a list of strings",
    );
    refused(
        check(
            &dex,
            &sim.dex
                .sign(&with(claims(&sim), json!({"groups": {"a": 1}}))),
        )
        .await,
        "not a list of strings",
    );
    refused(
        check(
            &dex,
            &sim.dex.sign(&with(claims(&sim), json!({"exp": null}))),
        )
        .await,
        "no exp claim",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_tokens_are_refused() {
    let sim = start_default().await;
    let dex = DexAuthenticator::new(config(&sim)).unwrap();
    let payload = b64(claims(&sim).to_string().as_bytes());
    refused(
        check(
            &dex,
            &format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
        )
        .await,
        "malformed",
    );
    // HS256 keyed with the public key: the classic confusion attack.
    let jwks: Value = sim.dex.jwks();
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(sim.dex.current_kid()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims(&sim),
        &jsonwebtoken::EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    refused(check(&dex, &hs).await, "not RS256");
    refused(check(&dex, "not.a-token").await, "malformed");
    refused(
        check(
            &dex,
            &format!(
                "{}.{}.sig",
                b64(br#"{"alg":"RS256","kid":"sim-key-1"}"#),
                "%%%"
            ),
        )
        .await,
        "signature",
    );
    refused(
        check(&dex, &format!("{}.{}.sig", b64(b"{not json"), payload)).await,
        "malformed",
    );
    // A key outside the published set, and a published key id over another key's signature.
    refused(
        check(&dex, &sign_with(2, &claims(&sim))).await,
        "does not publish",
    );
    let genuine = sim.dex.sign(&claims(&sim));
    let forged = sign_with(2, &claims(&sim));
    let mut parts: Vec<&str> = genuine.split('.').collect();
    parts[2] = forged.split('.').nth(2).unwrap();
    refused(check(&dex, &parts.join(".")).await, "signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_when_a_token_names_it_at_most_once_per_interval() {
    let sim = start_default().await;
    let dex = DexAuthenticator::new(config(&sim))
        .unwrap()
        .with_refresh_interval(std::time::Duration::from_millis(300));
    check(&dex, &sim.dex.sign(&claims(&sim))).await.unwrap();
    let new_kid = sim.dex.rotate();
    let token = sim.dex.sign(&claims(&sim));
    refused(check(&dex, &token).await, "does not publish");
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let user = check(&dex, &token).await.unwrap();
    assert_eq!(user.name, "dana@example.com", "signed by {new_kid}");
    check(&dex, &token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dex_down_is_503_without_cached_keys_and_harmless_with_them() {
    let sim = start_default().await;
    sim.local().set_faults(|f| f.dex_down = true);
    let dex = DexAuthenticator::new(config(&sim)).unwrap();
    match check(&dex, &sim.dex.sign(&claims(&sim))).await {
        Err(Error::Backend {
            backend,
            transient: true,
            ..
        }) => {
            assert_eq!(backend, packetcapture_domain::Backend::IdentityProvider)
        }
        other => panic!("expected the identity provider to be unavailable, got {other:?}"),
    }
    sim.local().set_faults(|f| f.dex_down = false);
    let dex = DexAuthenticator::new(config(&sim)).unwrap();
    check(&dex, &sim.dex.sign(&claims(&sim))).await.unwrap();
    sim.local().set_faults(|f| f.dex_down = true);
    check(&dex, &sim.dex.sign(&claims(&sim)))
        .await
        .expect("cached keys verify while Dex is down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_follow_the_kubernetes_rules_and_other_issuers_go_to_the_review() {
    let sim = start_default().await;
    let mut c = config(&sim);
    c.user_claim = "sub".into();
    c.groups_prefix = "oidc:".into();
    let dex = DexAuthenticator::new(c.clone()).unwrap();
    let user = check(&dex, &sim.dex.sign(&claims(&sim))).await.unwrap();
    assert_eq!(user.name, format!("{}#CgNkYW5h", sim.dex.issuer()));
    assert_eq!(user.groups, ["oidc:capture-readers"]);
    c.username_prefix = "-".into();
    let user = check(
        &DexAuthenticator::new(c.clone()).unwrap(),
        &sim.dex.sign(&claims(&sim)),
    )
    .await
    .unwrap();
    assert_eq!(user.name, "CgNkYW5h");

    let review = TokenTable::default().with("kube-token", User::named("from-review"));
    let routed = IssuerRouted::new(
        Arc::new(DexAuthenticator::new(config(&sim)).unwrap()),
        Arc::new(review),
    );
    let other_issuer = sim.dex.sign(&with(
        claims(&sim),
        json!({"iss": "https://kubernetes.default.svc"}),
    ));
    let err = routed
        .authenticate(&BearerToken::new(&other_issuer).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unauthenticated { reason } if reason == "the token is not valid"),
        "the review decided"
    );
    let user = routed
        .authenticate(&BearerToken::new("kube-token").unwrap())
        .await
        .unwrap();
    assert_eq!(user.name, "from-review");
    let user = routed
        .authenticate(&BearerToken::new(&sim.token("dana@example.com")).unwrap())
        .await
        .unwrap();
    assert_eq!(user.name, "dana@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dex_user_downloads_through_the_api() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let r = api
        .http
        .get(format!("{}/download/dev/web-traffic/files.zip", api.url))
        .bearer_auth(sim.token("dana@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(zip_digests(&r.bytes().await.unwrap()).len(), 6);
    let expired = sim
        .dex
        .sign(&with(claims(&sim), json!({"exp": now() - 3600})));
    let r = api
        .http
        .get(format!("{}/files/dev/web-traffic", api.url))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.text_lossy().await,
        "authentication failed: the token has expired\n"
    );
    assert!(
        !sim.local().requests().iter().any(
            |r| r.uri.contains("tokenreviews") && r.user.as_deref() == Some("dana@example.com")
        ),
        "Dex tokens are verified by the service, not reviewed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_production_default_dex_off_a_dex_token_is_reviewed_by_the_api_server() {
    let sim = start_default().await;
    // DEX_ENABLED unset, as in a default deployment: the API server (configured for OIDC, as
    // the simulated ones are) reviews every token, Dex's included; Dex itself is not asked.
    sim.local().set_faults(|f| f.dex_down = true);
    let api = start_api(&sim, &[("PACKETCAPTURE_API_DEX_ENABLED", "")]).await;
    let before = sim.local().requests().len();
    let r = api
        .http
        .get(format!("{}/files/dev/web-traffic", api.url))
        .bearer_auth(sim.token("dana@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "with Dex down, since Dex is not asked");
    let reviews = sim.local().requests()[before..]
        .iter()
        .filter(|r| r.uri.contains("tokenreviews"))
        .count();
    assert_eq!(reviews, 1, "the token went to a TokenReview");
}

trait TextLossy {
    async fn text_lossy(self) -> String;
}

impl TextLossy for reqwest::Response {
    async fn text_lossy(self) -> String {
        String::from_utf8_lossy(&self.bytes().await.unwrap()).into_owned()
    }
}

/// A token minted with the `openssl` command line (not this project's JWT library), its key
/// published as JWKS by a plain Python HTTPS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_elsewhere_and_published_by_a_plain_server_is_accepted_until_it_expires() {
    let sim = start_default().await;
    let dir = sim.dir.path().join("interop");
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&["openssl", "genrsa", "-out", "signing.pem", "2048"]);
    run(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.crt",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "extendedKeyUsage=serverAuth",
    ]);
    let modulus = String::from_utf8(run(&[
        "openssl",
        "rsa",
        "-in",
        "signing.pem",
        "-noout",
        "-modulus",
    ]))
    .unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let jwks = json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "openssl-key", "n": b64(&n), "e": "AQAB"}]});
    std::fs::write(dir.join("keys"), jwks.to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "import http.server, ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nctx.load_cert_chain('tls.crt', 'tls.key')\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         s.socket = ctx.wrap_socket(s.socket, server_side=True)\ns.serve_forever()\n"
    );
    let mut server = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let issuer = "https://issuer.example/dex";
    let mint = |exp: u64| {
        let header = b64(br#"{"alg":"RS256","typ":"JWT","kid":"openssl-key"}"#);
        let t = now();
        let body = json!({"iss": issuer, "aud": "tigera-manager", "sub": "x", "email": "dana@example.com", "email_verified": true,
                          "groups": ["capture-readers"], "iat": t, "exp": exp});
        let signing_input = format!("{header}.{}", b64(body.to_string().as_bytes()));
        std::fs::write(dir.join("input"), &signing_input).unwrap();
        let signature = run(&[
            "openssl",
            "dgst",
            "-sha256",
            "-sign",
            "signing.pem",
            "input",
        ]);
        format!("{signing_input}.{}", b64(&signature))
    };
    let jwk_url = format!("https://127.0.0.1:{port}/keys");
    let ca = dir.join("tls.crt").display().to_string();
    let api = start_api(
        &sim,
        &[
            ("PACKETCAPTURE_API_DEX_ISSUER", issuer),
            ("PACKETCAPTURE_API_DEX_JWK_URL", &jwk_url),
            ("PACKETCAPTURE_API_DEX_CA_FILE", &ca),
        ],
    )
    .await;
    let url = format!("{}/files/dev/web-traffic", api.url);
    let mut status = 0;
    for _ in 0..50 {
        status = api
            .http
            .get(&url)
            .bearer_auth(mint(now() + 600))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // the Python server starting
    }
    assert_eq!(status, 200, "{}", api.log_text());
    let r = api
        .http
        .get(&url)
        .bearer_auth(mint(now() - 600))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let _ = server.kill();
    let _ = server.wait();
}

fn unavailable(result: Result<User, Error>) {
    match result {
        Err(Error::Backend {
            backend: packetcapture_domain::Backend::IdentityProvider,
            transient: true,
            ..
        }) => {}
        other => panic!("expected the identity provider to be unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_key_fetch_and_cached_keys_never_wait_for_it() {
    let sim = start_default().await;
    let dex = Arc::new(
        DexAuthenticator::new(config(&sim))
            .unwrap()
            .with_refresh_interval(std::time::Duration::ZERO),
    );
    sim.dex
        .set_keys_behaviour(std::time::Duration::from_millis(300), false);
    let before = sim.dex.keys_requests();
    let token = sim.dex.sign(&claims(&sim));
    let checks = (0..20).map(|_| {
        let (dex, token) = (dex.clone(), token.clone());
        tokio::spawn(async move { check(&dex, &token).await })
    });
    for outcome in futures_util::future::join_all(checks).await {
        outcome.unwrap().unwrap();
    }
    assert_eq!(
        sim.dex.keys_requests() - before,
        1,
        "one fetch for all twenty"
    );

    // A fetch for a new key under way does not hold up tokens whose key is cached.
    sim.dex.rotate();
    sim.dex
        .set_keys_behaviour(std::time::Duration::from_secs(2), false);
    let new_token = sim.dex.sign(&claims(&sim));
    let waiting = tokio::spawn({
        let dex = dex.clone();
        async move { check(&dex, &new_token).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    check(&dex, &token)
        .await
        .expect("a cached key verifies at once");
    assert!(!waiting.is_finished(), "the fetch is still under way");
    waiting.await.unwrap().expect("the new key arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_key_fetch_is_tried_again_at_most_once_per_interval() {
    let sim = start_default().await;
    let interval = std::time::Duration::from_millis(500);
    let dex = DexAuthenticator::new(config(&sim))
        .unwrap()
        .with_refresh_interval(interval);
    sim.dex.set_keys_behaviour(std::time::Duration::ZERO, true);
    let before = sim.dex.keys_requests();
    let token = sim.dex.sign(&claims(&sim));
    for _ in 0..10 {
        unavailable(check(&dex, &token).await);
    }
    assert_eq!(
        sim.dex.keys_requests() - before,
        1,
        "the failure is remembered for the interval"
    );
    sim.dex.set_keys_behaviour(std::time::Duration::ZERO, false);
    tokio::time::sleep(interval + std::time::Duration::from_millis(50)).await;
    check(&dex, &token)
        .await
        .expect("tried again after the interval");
    assert_eq!(sim.dex.keys_requests() - before, 2);
}

/// A one-shot-per-connection HTTPS server that answers every request with `head` and `body`
/// and then drops the connection without TLS close_notify, as some proxies do. Its URL and
/// the file of its certificate.
async fn abrupt_server(sim: &TestSim, head: String, body: String) -> (String, std::path::PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = sim.dir.path().join(format!("abrupt-{}.crt", rand_suffix()));
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, head, body) = (acceptor.clone(), head.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(format!("{head}\r\n\r\n{body}").as_bytes())
                    .await;
                let _ = tls.flush().await;
                // Dropped without shutdown: no close_notify, just the TCP close.
                drop(tls);
            });
        }
    });
    (format!("https://localhost:{port}/keys"), ca)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_delimited_by_a_close_without_close_notify_is_read_when_it_parses() {
    let sim = start_default().await;
    let token = sim.dex.sign(&claims(&sim));
    let jwks = sim.dex.jwks().to_string();
    let dex_at = |(url, ca): (String, std::path::PathBuf)| {
        DexAuthenticator::new(DexConfig {
            jwk_url: url.parse().unwrap(),
            ca_file: Some(ca),
            ..config(&sim)
        })
        .unwrap()
    };
    let close_delimited = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close";

    let whole = dex_at(abrupt_server(&sim, close_delimited.into(), jwks.clone()).await);
    let user = check(&whole, &token)
        .await
        .expect("a whole close-delimited body is complete");
    assert_eq!(user.name, "dana@example.com");

    let cut =
        dex_at(abrupt_server(&sim, close_delimited.into(), jwks[..jwks.len() / 2].into()).await);
    unavailable(check(&cut, &token).await);

    // With a length, a short body is a truncation whatever it holds.
    let padded = format!("{jwks}     ");
    let short = dex_at(
        abrupt_server(
            &sim,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}",
                padded.len() + 10
            ),
            padded,
        )
        .await,
    );
    unavailable(check(&short, &token).await);
}
