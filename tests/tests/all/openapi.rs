//! The OpenAPI document held true: `schemathesis` (PyPI) runs every check against the real
//! binary on the simulated cluster with a real user's token, bounded examples, a fixed seed.

use std::process::Command;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_service_and_its_openapi_document_in_agreement() {
    let sim = start_default().await;
    let api = start_api(&sim, &[("PACKETCAPTURE_API_LOG_LEVEL", "info")]).await;
    let document = api
        .http
        .get(format!("{}/openapi.json", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(document.status(), 200, "served without a token");
    let token = std::fs::read_to_string(sim.out.join("tokens/jane")).unwrap();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemathesis/schemathesis.toml"
    );
    let out = Command::new("schemathesis")
        .args(["--config-file", config, "run"])
        .arg(format!("{}/openapi.json", api.url))
        .arg("--tls-verify")
        .arg(sim.out.join("ca.crt"))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .args([
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "20261130",
        ])
        .args(["--no-color"])
        .current_dir(sim.dir.path())
        .output()
        .expect("schemathesis runs (pip install schemathesis; .ci/run installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the service and its document apart:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    assert!(
        !api.log_text().contains(token.trim()),
        "a token reached the log"
    );
}
