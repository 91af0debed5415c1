//! Command-line interface (README "CLI"): clap commands that call into the library and format the
//! results for people (tables) or scripts (`--output json`). Exit codes: 0 ok/allow,
//! 1 deny/failed, 2 usage or configuration error.

mod audit;
mod cert;
mod check;
mod config;
mod crl;
mod inventory;
mod output;
mod principal;
mod probe;
mod remote;
mod store;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::bootstrap::{self, BootstrapArgs};
use crate::cert::{RevocationReason, Serial};
use crate::config::{Config, ConfigError};
use crate::store::StoreError;
use crate::{app, clock};

use output::{OutputArg, emit, print_generated};

#[derive(Parser)]
#[command(
    name = "certgate",
    // `certgate --version`: the crate version and the git commit it was built from (build.rs).
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CERTGATE_GIT_COMMIT"), ")"),
    about = "External authorization for mutual-TLS identities",
    long_about = "certgate decides, per request, whether the holder of a client certificate may make \
                  that request. Envoy (ext_authz gRPC) or an ingress forwards the verified client \
                  certificate; certgate checks trust, validity, lifetime policy, revocation, \
                  suspension, allowlists and roles, and answers allow (with identity headers) or deny.",
    after_help = "Examples:\n  certgate bootstrap --out-dir ./pki\n  certgate serve --config ./pki/certgate.yaml\n  certgate check --config ./pki/certgate.yaml --cert ./pki/admin.pem --path /api/jobs\n  certgate principal suspend worker-1@example.com --reason 'Compromised credentials detected'"
)]
struct Cli {
    /// Configuration file (also `CERTGATE_CONFIG`); accepted before or after the subcommand.
    #[arg(long, short = 'c', global = true, env = "CERTGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "CERTGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ext_authz gRPC server and the admin listener.
    ///
    /// Example: certgate serve --config /etc/certgate/certgate.yaml
    Serve,
    /// Dry-run a decision for a certificate, exactly as the server would decide it.
    ///
    /// Example: certgate check --config certgate.yaml --cert admin.pem --method GET --path /api/jobs
    Check {
        /// Client certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
        /// HTTP method of the request.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Request path (or gRPC method path).
        #[arg(long, default_value = "/")]
        path: String,
        /// Policy (default: the first matching policy_routes entry, else default_policy).
        #[arg(long)]
        policy: Option<String>,
        /// Host of the request (`:authority`), for policy_routes.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write a development PKI, a ready configuration and an enrolled store.
    ///
    /// Example: certgate bootstrap --out-dir ./pki --domain example.com
    Bootstrap(BootstrapCommand),
    /// Manage principals in the store (or, with --server, through a server's admin API).
    Principal {
        #[command(subcommand)]
        command: PrincipalCommand,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Manage registered certificates in the store (or, with --server, through a server's
    /// admin API).
    Cert {
        #[command(subcommand)]
        command: CertCommand,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Certificate revocation lists.
    #[command(subcommand)]
    Crl(CrlCommand),
    /// The audit trail of every change to principals and certificates (or, with --server,
    /// through a server's admin API).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Store backend set-up: create tables, copy records between backends.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print a shell completion script to stdout
    ///
    /// Examples:
    ///   certgate completions bash > /etc/bash_completion.d/certgate
    ///   certgate completions zsh > "${fpath[1]}/_certgate"
    ///   certgate completions fish > ~/.config/fish/completions/certgate.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// Shell to generate the script for.
        shell: clap_complete::Shell,
    },
    /// GET a URL once: exit 0 on the expected answer, 1 otherwise
    ///
    /// For images without curl: the chart's `helm test` Pod runs it.
    ///
    /// Examples:
    ///   certgate probe http://certgate:9901/readyz
    ///   certgate probe http://certgate:9002/auth --expect-status 401 --expect-error no_client_certificate
    #[command(verbatim_doc_comment)]
    Probe(probe::ProbeArgs),
    /// Print the certgate(1) man page (roff) to stdout, or write one page per command
    ///
    /// Examples:
    ///   certgate man | man -l -
    ///   certgate man --out-dir /usr/local/share/man/man1
    #[command(verbatim_doc_comment)]
    Man {
        /// Write certgate.1 and a certgate-COMMAND.1 page for every subcommand into this
        /// directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct BootstrapCommand {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out_dir: PathBuf,
    /// Domain used in names: admin@DOMAIN, worker-1@DOMAIN, certgate.DOMAIN.
    #[arg(long, default_value = "example.com")]
    domain: String,
    /// ext_authz gRPC listen address written into the configuration.
    #[arg(long, default_value = "127.0.0.1:9001")]
    grpc_listen: std::net::SocketAddr,
    /// Admin listen address written into the configuration.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin_listen: std::net::SocketAddr,
    /// Admin API listen address written into the configuration (`listen.admin_api`).
    #[arg(long, default_value = "127.0.0.1:9443")]
    admin_api_listen: std::net::SocketAddr,
    /// Leave the admin API off (no listen.admin_api, no operator certificate).
    #[arg(long)]
    no_admin_api: bool,
    /// Overwrite an existing bootstrap in the directory.
    #[arg(long)]
    force: bool,
}

impl From<BootstrapCommand> for BootstrapArgs {
    fn from(c: BootstrapCommand) -> Self {
        BootstrapArgs {
            out_dir: c.out_dir,
            domain: c.domain,
            grpc_listen: c.grpc_listen,
            admin_listen: c.admin_listen,
            admin_api_listen: (!c.no_admin_api).then_some(c.admin_api_listen),
            force: c.force,
        }
    }
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Create what the configured backend needs: the DynamoDB tables with their indexes
    /// and TTL setting (waits until they are active), or the embedded file and schema.
    /// Idempotent: existing tables are checked and left alone.
    ///
    /// Example: certgate store init --config certgate.yaml
    Init {
        /// Also adopt DynamoDB tables that existed before certgate: add certgate's indexes
        /// to the certificates table and set `expiry_bucket` on registered certificates that
        /// lack it, touching no other attribute.
        #[arg(long)]
        adopt: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Read-only: scan both DynamoDB tables and report, per kind of problem, how many items
    /// certgate would refuse (503 for whoever they concern) or read with documented
    /// defaults, with a few example keys. Run it before pointing replicas at tables that
    /// existed before certgate. Exit 0 when nothing would be refused, 1 otherwise.
    ///
    /// Example: certgate store check --config certgate.yaml -o json
    Check {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Copy every principal and certificate from this configuration's store into the
    /// store of another configuration (e.g. embedded → DynamoDB). Records that already
    /// exist in the target are left as they are and counted. Run `store init` on the
    /// target first.
    ///
    /// Example: certgate store migrate --config embedded.yaml --to dynamodb.yaml
    Migrate {
        /// Configuration whose store receives the records.
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit records, oldest first: who changed which principal or certificate, when,
    /// why, and the record before and after (in `-o json`).
    ///
    /// Examples:
    ///   certgate audit list --since 24h
    ///   certgate audit list --principal worker-1@example.com -o json
    #[command(verbatim_doc_comment)]
    List {
        /// Only records made at or after this time: RFC 3339 (2026-12-01T09:00:00Z) or a
        /// duration back from now (24h, 7d).
        #[arg(long, value_parser = audit::since)]
        since: Option<i64>,
        /// Only records of this principal and of its certificates.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Check the hash chain: every record's hash and its link to the one before. Prints
    /// is_valid, total_entries and first_invalid_sequence (the first edited, deleted or
    /// moved record). Exit 0 when the chain is intact, 1 when it is broken.
    ///
    /// Example: certgate audit verify -o json
    Verify {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Write audit records as JSON lines (one `audit list -o json` object per line) for a
    /// SIEM, to stdout or, whole or not at all, to a file.
    ///
    /// Example: certgate audit export --since 24h --out /var/log/certgate/audit.jsonl
    Export {
        /// Only records made at or after this time (as for `audit list`).
        #[arg(long, value_parser = audit::since)]
        since: Option<i64>,
        /// Only records of this principal and of its certificates.
        #[arg(long)]
        principal: Option<String>,
        /// File to write (replaced); `-` or absent: stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CrlCommand {
    /// Show a CRL: issuer, thisUpdate, nextUpdate, entries, and (with --config) whether its
    /// signature verifies against the configured trust bundle and whether it is fresh.
    /// The global --config (or CERTGATE_CONFIG) is optional here.
    /// Exit 0 when it parses (and verifies, with --config) and --serial is not listed;
    /// 1 when it does not parse, does not verify, or lists --serial.
    ///
    /// Examples:
    ///   certgate crl inspect http://pki.example.com/root.crl --config certgate.yaml
    ///   certgate crl inspect ./root.crl --serial 1A:2B:3C -o json
    Inspect {
        /// A file (DER or PEM) or an http(s):// URL.
        source: String,
        /// Whether this serial (hex, openssl's `1A:2B` form too) is listed.
        #[arg(long)]
        serial: Option<Serial>,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and every file it names; lists every problem.
    ///
    /// Example: certgate config validate --config certgate.yaml
    Validate {
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand)]
enum PrincipalCommand {
    /// Enrol a principal.
    ///
    /// Example: certgate principal create worker-1@example.com --type worker
    Create {
        /// Principal id.
        id: String,
        /// Principal type (admin, user, worker, service, …).
        #[arg(long = "type")]
        principal_type: String,
        /// Role override, comma-separated (default: roles_by_type of the configuration).
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one principal.
    Get {
        /// Principal id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List principals.
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Suspend a principal, or every active one but some: every certificate of it is denied
    /// within the cache TTL.
    ///
    /// Example: certgate principal suspend worker-1@example.com --reason "Compromised credentials detected"
    ///
    /// Example: certgate principal suspend --all --except breakglass@example.com --reason "CA compromise" --dry-run
    Suspend {
        /// Principal id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every active principal (but those named by --except).
        #[arg(long)]
        all: bool,
        /// With --all: principals left active (each must be enrolled; repeat or comma-separate).
        #[arg(long, requires = "all", value_delimiter = ',')]
        except: Vec<String>,
        /// Why (shown in the deny message and the logs).
        #[arg(long)]
        reason: String,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Re-activate a suspended principal, or every principal suspended with one reason.
    ///
    /// Example: certgate principal activate --all-suspended-by-reason "CA compromise" --dry-run
    Activate {
        /// Principal id.
        #[arg(required_unless_present = "all_suspended_by_reason")]
        id: Option<String>,
        /// Every principal suspended with exactly this reason.
        #[arg(long, conflicts_with = "id")]
        all_suspended_by_reason: Option<String>,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Register a certificate for its principal (read from the certificate unless given).
    ///
    /// Example: certgate cert register --cert worker.pem
    Register {
        /// Certificate file (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
        /// Principal id (default: from the certificate, per the identity rules).
        #[arg(long)]
        principal: Option<String>,
        /// Register even if the certificate does not chain to the trust bundle or its
        /// principal is not enrolled.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one certificate by serial.
    Get {
        /// Serial, hex (`1a2b`, openssl's `1A:2B` or `0x1a2b`).
        serial: Serial,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List certificates.
    ///
    /// Example: certgate cert list --expiring-within 30d
    List {
        /// Only this principal's certificates.
        #[arg(long)]
        principal: Option<String>,
        /// Only certificates that are still valid and expire within this duration (e.g. 30d);
        /// already expired ones are left out. Includes the certificates seen in traffic that
        /// nobody registered (the inventory).
        #[arg(long, value_parser = humantime::parse_duration)]
        expiring_within: Option<std::time::Duration>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Revoke a certificate in the store
    ///
    /// Examples:
    ///   certgate cert revoke 1a2b3c --reason key_compromise
    ///   certgate cert revoke 4dae86 --reason key_compromise --issuer 'CN=Old CA,O=Example'  # never registered
    #[command(verbatim_doc_comment)]
    Revoke {
        /// Serial, hex (`1a2b`, openssl's `1A:2B` or `0x1a2b`).
        serial: Serial,
        /// RFC 5280 reason.
        #[arg(long, value_parser = revocation_reason())]
        reason: RevocationReason,
        /// The certificate's issuer DN (RFC 4514, as `cert get` shows it). Required for a
        /// serial that was never registered: it then gets a revocation-only record. For a
        /// registered serial it must match the registration.
        #[arg(long)]
        issuer: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// The reasons a certificate can be revoked for, offered by completions and `--help`.
fn revocation_reason() -> impl TypedValueParser<Value = RevocationReason> {
    let names = RevocationReason::ALL
        .into_iter()
        .filter(|r| r.revokes())
        .map(RevocationReason::as_str);
    PossibleValuesParser::new(names).try_map(|name| name.parse::<RevocationReason>())
}

/// A failure that maps to an exit code.
enum Failure {
    /// Exit 1: the command ran and the answer is "no" (deny, not found, conflict).
    Failed(anyhow::Error),
    /// Exit 2: the configuration or the invocation is wrong.
    Usage(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.into())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Failed(e.into())
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The span exporter's gRPC connection lives on the runtime; `tracing:` is read once, at
    // start (a config that does not load is reported by `serve` itself).
    let _runtime = runtime.enter();
    let serving = matches!(cli.command, Command::Serve);
    let tracing_settings = cli
        .config
        .as_deref()
        .filter(|_| serving)
        .and_then(|path| Config::load(path).ok())
        .map(|config| config.observe.tracing);
    let _exporting = init_logging(cli.log_format, serving, tracing_settings.as_ref());
    match runtime.block_on(run(cli.command, cli.config)) {
        Ok(code) => code,
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn man(out_dir: Option<&Path>) -> Result<ExitCode, Failure> {
    let cmd = Cli::command();
    match out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("cannot render the man page")?;
            print_generated(&page)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(cmd, dir))
                .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(
    format: LogFormat,
    serving: bool,
    tracing: Option<&crate::observe::TracingSettings>,
) -> Option<crate::observe::otel::Exporting> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let default = if serving { "info" } else { "error" };
    let filter =
        EnvFilter::try_from_env("CERTGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        // The current span (the check's request id) once per line, not the whole stack; its
        // fields written as JSON text when it opens, without serde_json values per check.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .fmt_fields(crate::observe::span_fields::JsonSpanFields)
            .boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let (spans, exporting) = match tracing.map(crate::observe::otel::layer) {
        Some(Ok(Some((layer, exporting)))) => (Some(layer), Some(exporting)),
        Some(Err(e)) => {
            eprintln!("warning: traces are not exported: {e:#}");
            (None, None)
        }
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(spans.with_filter(LevelFilter::INFO))
        .init();
    exporting
}

fn config_path(config: &Option<PathBuf>) -> Result<&Path, Failure> {
    config.as_deref().ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "--config FILE (or CERTGATE_CONFIG) is required"
        ))
    })
}

async fn run(command: Command, config: Option<PathBuf>) -> Result<ExitCode, Failure> {
    match command {
        Command::Serve => {
            // A bad config at start is a usage error (exit 2); failures later are exit 1.
            Config::load(config_path(&config)?)?;
            app::serve(config_path(&config)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            cert,
            method,
            path,
            policy,
            host,
            output,
            remote,
        } => {
            let request = check::Request {
                cert: &cert,
                method: &method,
                path: &path,
                policy: policy.as_deref(),
                host: host.as_deref(),
            };
            check::run(&config, &remote, request, output.output).await
        }
        Command::Config(ConfigCommand::Validate { output }) => {
            config::validate(config_path(&config)?, output.output)
        }
        Command::Bootstrap(args) => {
            let summary = bootstrap::run(&args.into(), clock::unix_now())
                .await
                .map_err(Failure::Failed)?;
            emit(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Principal { command, remote } => principal::run(command, &config, &remote).await,
        Command::Cert { command, remote } => cert::run(command, &config, &remote).await,
        Command::Audit { command, remote } => audit::run(command, &config, &remote).await,
        Command::Store(cmd) => store::run(cmd, config_path(&config)?).await,
        // Generated from the clap definitions; no configuration involved.
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "certgate", &mut script);
            print_generated(&script)
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
        Command::Probe(args) => probe::run(args).await,
        Command::Crl(CrlCommand::Inspect {
            source,
            serial,
            output,
        }) => crl::inspect(&source, config.as_deref(), serial.as_ref(), output.output).await,
    }
}
