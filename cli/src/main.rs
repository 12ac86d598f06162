//! `kubectl packetcapture`: lists, downloads (the zip, which resumes once the capture finished,
//! one merged pcapng, or one file that resumes) and deletes the files of a Calico Enterprise PacketCapture through the PacketCapture
//! API. A client of its HTTP API only; kubectl finds it on PATH as `kubectl-packetcapture`.

mod api;
mod error;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, Parser, Subcommand};
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use http::{Method, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use api::{Api, Connection, encode, refusal};
use error::{CliError, EXIT_CODES};
use transfer::{
    Destination, FollowEnd, into_part, part_of, progress, receive, receive_live, saved,
};

/// Download the files of a Calico Enterprise PacketCapture: the zip of every node's files
/// (resumed when cut, once the capture finished), one time-ordered pcapng, or one file (resumed
/// when cut); list them; delete them.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-packetcapture",
    bin_name = "kubectl packetcapture",
    version,
    after_help = EXIT_CODES,
    after_long_help = EXIT_CODES
)]
struct Cli {
    /// The PacketCapture API's URL, e.g. https://localhost:9443/packet-capture (through the
    /// manager's gateway).
    #[arg(long, env = "PACKETCAPTURE_SERVER", global = true, value_name = "URL")]
    server: Option<String>,
    /// Trust this PEM bundle for the server's certificate (instead of the system's roots).
    #[arg(long, global = true, value_name = "FILE")]
    certificate_authority: Option<PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(long, global = true)]
    insecure_skip_tls_verify: bool,
    /// Bearer token; without it, the kubeconfig's user (token, token file or exec plugin).
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// A managed cluster's id (sent as X-Cluster-ID, through Voltron).
    #[arg(long, global = true, value_name = "ID")]
    cluster: Option<String>,
    /// The kubeconfig context whose user is used.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the capture's files per node: state, name, size, modified.
    Ls {
        /// NAMESPACE/NAME of the PacketCapture.
        capture: String,
    },
    /// Download every file as one zip (or --merged: one pcapng), or NS/NAME/NODE/FILE: one file.
    Get {
        /// NAMESPACE/NAME, or NAMESPACE/NAME/NODE/FILE for one file.
        target: String,
        /// Where to write ("-": standard output). Default: NS_NAME.zip, NS_NAME.pcapng or FILE.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<String>,
        /// Only this node (repeatable).
        #[arg(long, value_name = "NODE")]
        node: Vec<String>,
        /// Only packets (files, for the zip) from this time on (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only packets (files, for the zip) before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// One time-ordered pcapng of every node instead of the zip.
        #[arg(long)]
        merged: bool,
        /// With --merged: only the packets this pcap-filter expression (tcpdump's syntax)
        /// matches, filtered on the server.
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        /// With --merged: follow the running capture, packets written as they arrive, until
        /// it finishes, --until passes or Ctrl-C (a clean end). Starts now unless --since.
        /// For Wireshark: `-o - | wireshark -k -i -`.
        #[arg(long)]
        follow: bool,
        /// With --follow: how long (milliseconds, 0-10000) a quiet stream may hold the others
        /// back, so packets come in time order (the server's default: 1000).
        #[arg(long, value_name = "MS")]
        lag: Option<u32>,
    },
    /// Delete the capture's files from every node (the capture must be Finished).
    Rm {
        /// NAMESPACE/NAME of the PacketCapture.
        capture: String,
    },
    /// Print a shell completion script.
    Completion {
        /// bash or zsh.
        shell: Shell,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
}

/// The listing's wire format.
#[derive(Debug, Deserialize)]
struct Listing {
    nodes: Vec<NodeFiles>,
}

#[derive(Debug, Deserialize)]
struct NodeFiles {
    node: String,
    state: Option<String>,
    files: Vec<FileInfo>,
}

#[derive(Debug, Deserialize)]
struct FileInfo {
    name: String,
    size: u64,
    modified: String,
}

/// `NS/NAME` or `NS/NAME/NODE/FILE`.
enum Target {
    Capture(String, String),
    File(String, String, String, String),
}

fn target(text: &str) -> Result<Target, CliError> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(CliError::Usage(format!(
            "{text:?}: expected NAMESPACE/NAME or NAMESPACE/NAME/NODE/FILE"
        )));
    }
    match parts.as_slice() {
        [ns, name] => Ok(Target::Capture((*ns).into(), (*name).into())),
        [ns, name, node, file] => Ok(Target::File(
            (*ns).into(),
            (*name).into(),
            (*node).into(),
            (*file).into(),
        )),
        _ => Err(CliError::Usage(format!(
            "{text:?}: expected NAMESPACE/NAME or NAMESPACE/NAME/NODE/FILE"
        ))),
    }
}

fn capture_only(text: &str) -> Result<(String, String), CliError> {
    match target(text)? {
        Target::Capture(ns, name) => Ok((ns, name)),
        Target::File(..) => Err(CliError::Usage(format!(
            "{text:?}: expected NAMESPACE/NAME"
        ))),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completion { shell } = cli.command {
        let shell = match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
        };
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "kubectl-packetcapture",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let server = cli.server.clone().ok_or_else(|| {
        CliError::Usage("no server: pass --server URL or set PACKETCAPTURE_SERVER".into())
    })?;
    let api = Api::connect(&Connection {
        server,
        certificate_authority: cli.certificate_authority.clone(),
        insecure: cli.insecure_skip_tls_verify,
        token: cli.token.clone(),
        cluster: cli.cluster.clone(),
        context: cli.context.clone(),
        kubeconfig: cli.kubeconfig.clone(),
    })
    .await?;
    match cli.command {
        Command::Ls { capture } => ls(&api, &capture).await,
        Command::Rm { capture } => rm(&api, &capture).await,
        Command::Get {
            target: text,
            output,
            node,
            since,
            until,
            merged,
            filter,
            follow,
            lag,
        } => match target(&text)? {
            Target::Capture(ns, name) => {
                if filter.is_some() && !merged {
                    return Err(CliError::Usage(
                        "--filter selects packets: it needs --merged (a zip carries whole files)"
                            .into(),
                    ));
                }
                if follow && !merged {
                    return Err(CliError::Usage(
                        "--follow streams packets as they are captured: it needs --merged".into(),
                    ));
                }
                if lag.is_some() && !follow {
                    return Err(CliError::Usage("--lag is for --follow only".into()));
                }
                let query = Query {
                    nodes: node,
                    since,
                    until,
                    filter,
                    follow: follow.then_some(lag),
                };
                download(&api, &ns, &name, merged, &query, output.as_deref()).await
            }
            Target::File(ns, name, node_name, file) => {
                if merged
                    || !node.is_empty()
                    || since.is_some()
                    || until.is_some()
                    || filter.is_some()
                    || follow
                    || lag.is_some()
                {
                    return Err(CliError::Usage(
                        "--merged, --node, --since, --until, --filter and --follow select from a capture, not one file"
                            .into(),
                    ));
                }
                one_file(&api, &ns, &name, &node_name, &file, output.as_deref()).await
            }
        },
        Command::Completion { .. } => Ok(()),
    }
}

async fn ls(api: &Api, capture: &str) -> Result<(), CliError> {
    let (ns, name) = capture_only(capture)?;
    let listing: Listing = api
        .json(&format!("/files/{}/{}", encode(&ns), encode(&name)))
        .await?;
    let mut rows = vec![[
        "NODE".to_owned(),
        "STATE".to_owned(),
        "FILE".to_owned(),
        "SIZE".to_owned(),
        "MODIFIED".to_owned(),
    ]];
    for node in &listing.nodes {
        let state = node.state.clone().unwrap_or_else(|| "-".into());
        if node.files.is_empty() {
            rows.push([
                node.node.clone(),
                state.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for f in &node.files {
            rows.push([
                node.node.clone(),
                state.clone(),
                f.name.clone(),
                f.size.to_string(),
                f.modified.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

async fn rm(api: &Api, capture: &str) -> Result<(), CliError> {
    let (ns, name) = capture_only(capture)?;
    let response = api
        .send(
            Method::DELETE,
            &format!("/files/{}/{}", encode(&ns), encode(&name)),
            &[],
        )
        .await?;
    if response.status() != StatusCode::NO_CONTENT {
        return Err(refusal(response).await);
    }
    eprintln!("deleted the files of {ns}/{name} from every node");
    Ok(())
}

/// Selection of a download.
struct Query {
    nodes: Vec<String>,
    since: Option<String>,
    until: Option<String>,
    filter: Option<String>,
    /// Following, with the lag asked for (if any).
    follow: Option<Option<u32>>,
}

impl Query {
    fn to_query_string(&self) -> String {
        let mut pairs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("node={}", encode(n)))
            .collect();
        if let Some(s) = &self.since {
            pairs.push(format!("since={}", encode(s)));
        }
        if let Some(u) = &self.until {
            pairs.push(format!("until={}", encode(u)));
        }
        if let Some(f) = &self.filter {
            pairs.push(format!("filter={}", encode(f)));
        }
        if let Some(lag) = self.follow {
            pairs.push("follow=true".to_owned());
            if let Some(lag) = lag {
                pairs.push(format!("lag={lag}"));
            }
        }
        if pairs.is_empty() {
            String::new()
        } else {
            format!("?{}", pairs.join("&"))
        }
    }
}

async fn download(
    api: &Api,
    ns: &str,
    name: &str,
    merged: bool,
    query: &Query,
    output: Option<&str>,
) -> Result<(), CliError> {
    let (file, extension) = if merged {
        ("merged.pcapng", "pcapng")
    } else {
        ("files.zip", "zip")
    };
    let destination = Destination::from_arg(output, format!("{ns}_{name}.{extension}"));
    let path = format!(
        "/download/{}/{}/{file}{}",
        encode(ns),
        encode(name),
        query.to_query_string()
    );
    // The listing's sizes give the bar its length (the zip is about their sum).
    let estimate = if query.follow.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        api.json::<Listing>(&format!("/files/{}/{}", encode(ns), encode(name)))
            .await
            .ok()
            .map(|l| {
                l.nodes
                    .iter()
                    .filter(|n| query.nodes.is_empty() || query.nodes.contains(&n.node))
                    .flat_map(|n| &n.files)
                    .map(|f| f.size)
                    .sum::<u64>()
            })
    } else {
        None
    };
    let started = Instant::now();
    // A zip into a file resumes (a finished capture's zip has a strong ETag and ranges).
    if let (false, None, Destination::File(target)) = (merged, query.follow, &destination) {
        let label = format!("{ns}/{name}");
        return resumable(
            api,
            &path,
            target,
            &label,
            started,
            estimate.filter(|t| *t > 0),
        )
        .await;
    }
    let response = api.send(Method::GET, &path, &[]).await?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NO_CONTENT => {
            eprintln!("nothing to download: no file (or no packet) of {ns}/{name} matches");
            return Ok(());
        }
        _ => return Err(refusal(response).await),
    }
    let bar = progress(estimate.filter(|t| *t > 0), 0, &format!("{ns}/{name}"));
    if query.follow.is_some() {
        return follow(
            response,
            destination,
            &bar,
            started,
            &format!("{ns}/{name}"),
        )
        .await;
    }
    match destination {
        Destination::Stdout => {
            let mut out = tokio::io::stdout();
            let bytes = receive(
                response,
                &mut out,
                &bar,
                "part of it was written to standard output",
            )
            .await?;
            saved(&bar, "to standard output", bytes, started);
        }
        Destination::File(target) => {
            let bytes = into_part(&target, async |out| {
                receive(response, out, &bar, "nothing was saved").await
            })
            .await?;
            saved(&bar, &target.display().to_string(), bytes, started);
        }
    }
    Ok(())
}

/// Writes a followed capture as it comes: to standard output, or to `OUT.part` renamed to
/// `OUT` when the follow ends (the capture finished, `--until` passed, or Ctrl-C: all clean
/// ends); a stream the server cut removes the part file, as for any download.
async fn follow(
    response: http::Response<kube::client::Body>,
    destination: Destination,
    bar: &indicatif::ProgressBar,
    started: Instant,
    capture: &str,
) -> Result<(), CliError> {
    let said = |end: FollowEnd| match end {
        FollowEnd::Ended => format!("{capture} ended"),
        FollowEnd::Stopped => "stopped".to_owned(),
    };
    match destination {
        Destination::Stdout => {
            let mut out = tokio::io::stdout();
            let (bytes, end) = receive_live(
                response,
                &mut out,
                bar,
                "part of it was written to standard output",
            )
            .await?;
            saved(
                bar,
                &format!("to standard output ({})", said(end)),
                bytes,
                started,
            );
        }
        Destination::File(target) => {
            let (bytes, end) = into_part(&target, async |out| {
                receive_live(response, out, bar, "nothing was saved").await
            })
            .await?;
            saved(
                bar,
                &format!("{} ({})", target.display(), said(end)),
                bytes,
                started,
            );
        }
    }
    Ok(())
}

/// `FILE.part.etag`: the validator of a partial download, so a resume asks for the same file.
fn validator_of(part: &std::path::Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".etag");
    PathBuf::from(name)
}

async fn one_file(
    api: &Api,
    ns: &str,
    name: &str,
    node: &str,
    file: &str,
    output: Option<&str>,
) -> Result<(), CliError> {
    let destination = Destination::from_arg(output, file.to_owned());
    let path = format!(
        "/files/{}/{}/{}/{}",
        encode(ns),
        encode(name),
        encode(node),
        encode(file)
    );
    let started = Instant::now();
    let target = match destination {
        Destination::Stdout => {
            let response = api.send(Method::GET, &path, &[]).await?;
            if response.status() != StatusCode::OK {
                return Err(refusal(response).await);
            }
            let total = content_length(&response);
            let bar = progress(total, 0, file);
            let bytes = receive(
                response,
                &mut tokio::io::stdout(),
                &bar,
                "part of it was written to standard output",
            )
            .await?;
            saved(&bar, "to standard output", bytes, started);
            return Ok(());
        }
        Destination::File(target) => target,
    };
    resumable(api, &path, &target, file, started, None).await
}

/// Downloads `path` into `target` through `TARGET.part`, resuming a partial download that
/// kept a strong validator (`TARGET.part.etag`): `Range` from its end with `If-Range`, so a
/// representation that changed since comes whole and starts the file again. A cut transfer
/// keeps the part file when the answer had a strong validator (run again to resume), and
/// removes it otherwise. `estimate` sizes the bar when the answer has no length.
async fn resumable(
    api: &Api,
    path: &str,
    target: &std::path::Path,
    label: &str,
    started: Instant,
    estimate: Option<u64>,
) -> Result<(), CliError> {
    let part = part_of(target);
    let validator = validator_of(&part);
    // A partial download with a strong validator resumes from its end; If-Range makes the
    // server send the whole file instead if it changed since.
    let mut resumes = true;
    let have = match (
        tokio::fs::metadata(&part).await,
        tokio::fs::read_to_string(&validator).await,
    ) {
        (Ok(meta), Ok(etag)) if meta.len() > 0 && !etag.trim().starts_with("W/") => {
            Some((meta.len(), etag.trim().to_owned()))
        }
        _ => None,
    };
    let headers = match &have {
        Some((len, etag)) => {
            eprintln!("resuming {} at byte {len}", target.display());
            vec![(RANGE, format!("bytes={len}-")), (IF_RANGE, etag.clone())]
        }
        None => Vec::new(),
    };
    let response = api.send(Method::GET, path, &headers).await?;
    let (mut out, offset) = match (response.status(), &have) {
        (StatusCode::PARTIAL_CONTENT, Some((len, _))) => {
            let starts_at = content_range(&response)
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if starts_at != Some(*len) {
                return Err(CliError::Local(format!(
                    "the server resumed at {starts_at:?}, not at byte {len}; remove {} and retry",
                    part.display()
                )));
            }
            let out = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .await
                .map_err(|e| CliError::Local(format!("cannot open {}: {e}", part.display())))?;
            (out, *len)
        }
        (StatusCode::RANGE_NOT_SATISFIABLE, Some((len, _))) => {
            // The partial file is already as long as the file: it is whole.
            let size = content_range(&response)
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.parse::<u64>().ok());
            if size != Some(*len) {
                return Err(refusal(response).await);
            }
            finish(&part, &validator, target).await?;
            eprintln!("saved {}: already whole ({len} bytes)", target.display());
            return Ok(());
        }
        (StatusCode::NO_CONTENT, _) => {
            eprintln!("nothing to download: no file of {label} matches");
            return Ok(());
        }
        (StatusCode::OK, _) => {
            if have.is_some() {
                eprintln!("{label} changed since the partial download; starting again");
            }
            let etag = header(&response, ETAG)
                .filter(|e| !e.starts_with("W/"))
                .map(str::to_owned);
            resumes = etag.is_some();
            match etag {
                Some(etag) => tokio::fs::write(&validator, etag).await,
                None => tokio::fs::remove_file(&validator).await.or(Ok(())),
            }
            .map_err(|e| CliError::Local(format!("cannot write {}: {e}", validator.display())))?;
            let out = tokio::fs::File::create(&part)
                .await
                .map_err(|e| CliError::Local(format!("cannot create {}: {e}", part.display())))?;
            (out, 0)
        }
        _ => return Err(refusal(response).await),
    };
    let total = content_length(&response).map(|l| l + offset).or(estimate);
    let bar = progress(total, offset, label);
    let kept = if resumes {
        format!(
            "{} keeps what arrived; run the same command again to resume",
            part.display()
        )
    } else {
        "nothing was saved".to_owned()
    };
    let received = receive(response, &mut out, &bar, &kept).await;
    if received.is_err() && !resumes {
        let _ = tokio::fs::remove_file(&part).await;
        let _ = tokio::fs::remove_file(&validator).await;
    }
    let bytes = received?;
    out.flush()
        .await
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", part.display())))?;
    drop(out);
    finish(&part, &validator, target).await?;
    saved(&bar, &target.display().to_string(), offset + bytes, started);
    Ok(())
}

fn header(
    response: &http::Response<kube::client::Body>,
    name: http::header::HeaderName,
) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn content_length(response: &http::Response<kube::client::Body>) -> Option<u64> {
    header(response, CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

fn content_range(response: &http::Response<kube::client::Body>) -> Option<&str> {
    header(response, CONTENT_RANGE)
}

async fn finish(
    part: &std::path::Path,
    validator: &std::path::Path,
    target: &std::path::Path,
) -> Result<(), CliError> {
    tokio::fs::rename(part, target).await.map_err(|e| {
        CliError::Local(format!(
            "cannot rename {} to {}: {e}",
            part.display(),
            target.display()
        ))
    })?;
    let _ = tokio::fs::remove_file(validator).await;
    Ok(())
}
