//! Command-line interface (README "CLI"): clap commands that call into the library and format the
//! results for people (tables) or scripts (`--output json`). Exit codes: 0 ok/allow,
//! 1 deny/failed, 2 usage or configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use certgate::check::{CheckInput, Checker};
use certgate::config::{Config, ConfigError, StoreBackend};
use certgate::metrics::Metrics;
use certgate::store::{
    self, Admin, CertificateRecord, DynamoStore, Principal, PrincipalStatus, Purpose,
    REVOCATION_REASONS, StoreError,
};
use certgate::{app, bootstrap, cert, clock, crl};

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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Args, Clone, Copy)]
struct OutputArg {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
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
        /// Policy (default: the configuration's default_policy).
        #[arg(long)]
        policy: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write a development PKI, a ready configuration and an enrolled store.
    ///
    /// Example: certgate bootstrap --out-dir ./pki --domain example.com
    Bootstrap(bootstrap::BootstrapArgs),
    /// Manage principals in the store.
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// Manage registered certificates in the store.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Certificate revocation lists.
    #[command(subcommand)]
    Crl(CrlCommand),
    /// Store backend set-up: create tables, copy records between backends.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print a shell completion script to stdout.
    ///
    /// Examples:
    ///   certgate completions bash > /etc/bash_completion.d/certgate
    ///   certgate completions zsh > "${fpath[1]}/_certgate"
    ///   certgate completions fish > ~/.config/fish/completions/certgate.fish
    Completions {
        /// Shell to generate the script for.
        shell: clap_complete::Shell,
    },
    /// Print the certgate(1) man page (roff) to stdout, or write one page per command.
    ///
    /// Examples:
    ///   certgate man | man -l -
    ///   certgate man --out-dir /usr/local/share/man/man1
    Man {
        /// Write certgate.1 and a certgate-COMMAND.1 page for every subcommand into this
        /// directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
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
        serial: Option<String>,
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
    /// Suspend a principal: every certificate of it is denied within the cache TTL.
    ///
    /// Example: certgate principal suspend worker-1@example.com --reason "Compromised credentials detected"
    Suspend {
        /// Principal id.
        id: String,
        /// Why (shown in the deny message and the logs).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Re-activate a suspended principal.
    Activate {
        /// Principal id.
        id: String,
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
    /// Show one certificate by serial (lowercase hex).
    Get {
        /// Serial, hex.
        serial: String,
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
        /// already expired ones are left out.
        #[arg(long, value_parser = humantime::parse_duration)]
        expiring_within: Option<std::time::Duration>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Revoke a certificate in the store.
    ///
    /// Example: certgate cert revoke 1a2b3c --reason key_compromise
    Revoke {
        /// Serial, hex.
        serial: String,
        /// RFC 5280 reason: key_compromise, superseded, cessation_of_operation, …
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        output: OutputArg,
    },
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
    init_logging(cli.log_format, matches!(cli.command, Command::Serve));
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

/// Writes generated text (a completion script, a man page) to stdout; a reader that stops
/// early (`| head`) is not an error.
fn print_generated(text: &[u8]) -> Result<ExitCode, Failure> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Failed(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn init_logging(format: LogFormat, serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving { "info" } else { "error" };
    let filter =
        EnvFilter::try_from_env("CERTGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
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
            output,
        } => {
            check(
                config_path(&config)?,
                &cert,
                &method,
                &path,
                policy.as_deref(),
                output.output,
            )
            .await
        }
        Command::Config(ConfigCommand::Validate { output }) => {
            validate(config_path(&config)?, output.output)
        }
        Command::Bootstrap(args) => {
            let summary = bootstrap::run(&args, clock::unix_now())
                .await
                .map_err(Failure::Failed)?;
            emit(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Principal(cmd) => principal(cmd, &config).await,
        Command::Cert(cmd) => certificate(cmd, &config).await,
        Command::Store(cmd) => store_command(cmd, config_path(&config)?).await,
        // Generated from the clap definitions; no configuration involved.
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "certgate", &mut script);
            print_generated(&script)
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
        Command::Crl(CrlCommand::Inspect {
            source,
            serial,
            output,
        }) => crl_inspect(&source, config.as_deref(), serial.as_deref(), output.output).await,
    }
}

/// Load the configuration and open its existing store. Commands that only read or change
/// records refuse a store file that does not exist: a typo in `store.path` must not look
/// like "every principal vanished".
async fn open_existing(config_path: &Path) -> Result<(Config, Arc<dyn Admin>), Failure> {
    let config = Config::load(config_path)?;
    require_store_file(&config)?;
    let store = store::open(&config.store.backend, Purpose::Admin).await?;
    Ok((config, store))
}

async fn open_or_create(config_path: &Path) -> Result<(Config, Arc<dyn Admin>), Failure> {
    let config = Config::load(config_path)?;
    let store = store::open(&config.store.backend, Purpose::Admin).await?;
    Ok((config, store))
}

fn require_store_file(config: &Config) -> Result<(), Failure> {
    let StoreBackend::Embedded { path } = &config.store.backend else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    Err(Failure::Usage(anyhow::anyhow!(
        "store file {} does not exist (check store.path in {}); `certgate serve`, \
         `certgate bootstrap` or `principal create` create it",
        path.display(),
        config.source.display()
    )))
}

fn store_check_text(tables: &[store::dynamodb::TableCheck]) -> String {
    let mut text = String::new();
    for t in tables {
        text.push_str(&format!(
            "{} ({}): {} items, {} refused, {} read with defaults\n",
            t.kind, t.table, t.items, t.refused, t.defaults
        ));
        for p in &t.problems {
            let finding = match p.finding {
                store::dynamodb::Finding::Refused => "refused",
                store::dynamodb::Finding::Defaults => "defaults",
            };
            text.push_str(&format!(
                "  {finding:<8} {:>6}  {}  e.g. {}\n",
                p.count,
                p.problem,
                p.examples.join(", ")
            ));
        }
    }
    text
}

async fn store_command(cmd: StoreCommand, config_path: &Path) -> Result<ExitCode, Failure> {
    match cmd {
        StoreCommand::Init { adopt, output } => {
            let config = Config::load(config_path)?;
            let report = match &config.store.backend {
                StoreBackend::Embedded { path } => {
                    store::EmbeddedStore::open(path)?;
                    vec![format!("embedded store {} ready", path.display())]
                }
                StoreBackend::DynamoDb(settings) => {
                    let store = DynamoStore::connect(settings.clone(), Purpose::Admin).await?;
                    let mut report = store.init_tables().await?;
                    if adopt {
                        report.extend(store.adopt_tables().await?);
                    }
                    report
                }
            };
            print(output.output, &json!({ "result": report }), || {
                report.iter().map(|line| format!("{line}\n")).collect()
            });
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Check { output } => {
            let config = Config::load(config_path)?;
            let StoreBackend::DynamoDb(settings) = &config.store.backend else {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "store check reads DynamoDB tables; the embedded store's schema is \
                     enforced by SQLite"
                )));
            };
            let tables = DynamoStore::connect(settings.clone(), Purpose::Admin)
                .await?
                .check_tables()
                .await?;
            let refused: u64 = tables.iter().map(|t| t.refused).sum();
            print(
                output.output,
                &json!({ "refused": refused, "tables": tables }),
                || store_check_text(&tables),
            );
            Ok(if refused == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        StoreCommand::Migrate { to, output } => {
            let (_, from) = open_existing(config_path).await?;
            let (target_config, target) = open_or_create(&to).await?;
            let mut counts = [[0u64; 2]; 2];
            for p in from.list_principals().await? {
                match target.create_principal(&p).await {
                    Ok(()) => counts[0][0] += 1,
                    Err(StoreError::AlreadyExists { .. }) => counts[0][1] += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            for c in from.list_certificates(None, None).await? {
                match target.register_certificate(&c).await {
                    Ok(()) => counts[1][0] += 1,
                    Err(StoreError::AlreadyExists { .. }) => counts[1][1] += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            let value = json!({
                "target": app::describe_backend(&target_config.store.backend),
                "principals": { "copied": counts[0][0], "already_present": counts[0][1] },
                "certificates": { "copied": counts[1][0], "already_present": counts[1][1] },
            });
            print(output.output, &value, || {
                format!(
                    "principals: {} copied, {} already present\n\
                     certificates: {} copied, {} already present\n",
                    counts[0][0], counts[0][1], counts[1][0], counts[1][1]
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Write to stdout; a closed pipe (`certgate principal list | head`) ends the program quietly
/// instead of panicking.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

fn print(output: Output, value: &Value, table: impl FnOnce() -> String) {
    match output {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        )),
        Output::Table => emit(&table()),
    }
}

async fn check(
    config_path: &Path,
    cert_path: &Path,
    method: &str,
    path: &str,
    policy: Option<&str>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let config = Config::load(config_path)?;
    let raw = std::fs::read(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))
        .map_err(Failure::Usage)?;
    let metrics = Metrics::new();
    require_store_file(&config)?;
    let store = app::open_store(&config, &metrics).await?;
    let checker = Checker::new(config, store, metrics);
    // The server keeps CRLs loaded in the background; a dry run loads them once, now.
    crl::refresh::load_once(checker.revocation()).await;
    let outcome = checker
        .check(
            CheckInput {
                certificate: Some(&raw),
                encoding: certgate::cert::CertEncoding::Auto,
                policy,
                method,
                path,
                malformed: None,
            },
            clock::unix_now(),
        )
        .await;
    let headers: serde_json::Map<String, Value> = outcome
        .allow_headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    let (decision, reason, message) = match &outcome.decision {
        Ok(_) => ("allow", None, "allowed".to_owned()),
        Err(deny) => ("deny", Some(deny.reason.as_str()), deny.message.clone()),
    };
    let grant = outcome.decision.as_ref().ok();
    let value = json!({
        "decision": decision,
        "status": outcome.http_status(),
        "reason": reason,
        "message": message,
        "policy": outcome.policy,
        "principal": outcome.principal(),
        "principal_type": grant.map(|g| g.principal_type.as_str()),
        "roles": grant.map(|g| g.roles.clone()),
        "headers": headers,
        "certificate": outcome.identity().map(|id| json!({
            "subject": id.subject(),
            "issuer": id.issuer(),
            "serial": id.serial(),
            "sha256": id.sha256_hex(),
            "not_before": certgate::authz::rfc3339(id.not_before()),
            "not_after": certgate::authz::rfc3339(id.not_after()),
        })),
    });
    print(output, &value, || {
        let mut s = format!(
            "decision   {decision}\nstatus     {}\npolicy     {}\nprincipal  {}\n",
            outcome.http_status(),
            outcome.policy,
            outcome.principal().unwrap_or("-")
        );
        if let Some(reason) = reason {
            s.push_str(&format!("reason     {reason}\n"));
        }
        s.push_str(&format!("message    {message}\n"));
        for (k, v) in &headers {
            s.push_str(&format!(
                "header     {k}: {}\n",
                v.as_str().unwrap_or_default()
            ));
        }
        s
    });
    Ok(if outcome.decision.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn validate(config_path: &Path, output: Output) -> Result<ExitCode, Failure> {
    match Config::load(config_path) {
        Ok(config) => {
            let mut policies: Vec<_> = config.policies.keys().cloned().collect();
            policies.sort();
            let warnings = expiring_anchors(&config, clock::unix_now());
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let value = json!({
                "valid": true,
                "file": config_path,
                "policies": policies,
                "default_policy": config.default_policy,
                "trust_bundle_cas": config.trust.len(),
                "crl_issuers": config.crl.issuers.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
                "warnings": warnings,
            });
            print(output, &value, || {
                format!(
                    "{}: valid ({} policies, {} CA certificates in the trust bundle)\n",
                    config_path.display(),
                    policies.len(),
                    config.trust.len()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            let problems: Vec<Value> = err
                .problems
                .iter()
                .map(|p| json!({"key": p.key, "message": p.message}))
                .collect();
            let value = json!({"valid": false, "file": config_path, "problems": problems});
            match output {
                Output::Json => print(output, &value, String::new),
                Output::Table => eprintln!("{err}"),
            }
            Ok(ExitCode::from(2))
        }
    }
}

/// CAs of the trust bundle expire in this many seconds or fewer: `config validate` warns.
const ANCHOR_EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

/// A warning per CA of the bundle that expires within 30 days of `now` (an expired one is
/// already refused by the configuration).
fn expiring_anchors(config: &Config, now: i64) -> Vec<String> {
    config
        .trust
        .cas()
        .iter()
        .filter(|ca| ca.not_after.saturating_sub(now) <= ANCHOR_EXPIRY_WARNING_SECS)
        .map(|ca| {
            format!(
                "trust.ca_bundle: CA #{} '{}' expires at {} (in {}); once expired it validates \
                 nothing and certgate refuses the bundle, so replace it before then",
                ca.position,
                ca.subject,
                certgate::authz::rfc3339(ca.not_after),
                crl::human(ca.not_after.saturating_sub(now))
            )
        })
        .collect()
}

fn principal_json(p: &Principal) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn principal_row(p: &Principal) -> String {
    format!(
        "{:<40} {:<10} {:<10} {:<20} {}\n",
        p.principal_id,
        p.principal_type.as_deref().unwrap_or("-"),
        p.status.as_str(),
        p.roles.as_ref().map_or("-".to_owned(), |r| r.join(",")),
        p.suspended_reason.as_deref().unwrap_or("")
    )
}

const PRINCIPAL_HEADER: &str =
    "PRINCIPAL                                TYPE       STATUS     ROLES                REASON\n";

async fn principal(cmd: PrincipalCommand, config: &Option<PathBuf>) -> Result<ExitCode, Failure> {
    let (result, output): (Vec<Principal>, Output) = match cmd {
        PrincipalCommand::Create {
            id,
            principal_type,
            roles,
            output,
        } => {
            let (_, store) = open_or_create(config_path(config)?).await?;
            let principal = Principal {
                principal_id: id,
                principal_type: Some(principal_type),
                status: PrincipalStatus::Active,
                suspended_at: None,
                suspended_reason: None,
                roles,
                created_at: Some(clock::unix_millis()),
            };
            store.create_principal(&principal).await?;
            (vec![principal], output.output)
        }
        PrincipalCommand::Get { id, output } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            let found = store.get_principal(&id).await?.ok_or_else(|| {
                Failure::Failed(
                    StoreError::NotFound {
                        kind: "principal",
                        key: id.clone(),
                    }
                    .into(),
                )
            })?;
            (vec![found], output.output)
        }
        PrincipalCommand::List { output } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            let all = store.list_principals().await?;
            if output.output == Output::Json {
                print(
                    output.output,
                    &Value::Array(all.iter().map(principal_json).collect()),
                    String::new,
                );
            } else {
                emit(PRINCIPAL_HEADER);
                all.iter().for_each(|p| emit(&principal_row(p)));
            }
            return Ok(ExitCode::SUCCESS);
        }
        PrincipalCommand::Suspend { id, reason, output } => {
            if reason.trim().is_empty() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--reason must not be empty"
                )));
            }
            let (_, store) = open_existing(config_path(config)?).await?;
            (
                vec![
                    store
                        .suspend_principal(&id, &reason, clock::unix_millis())
                        .await?,
                ],
                output.output,
            )
        }
        PrincipalCommand::Activate { id, output } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            (vec![store.activate_principal(&id).await?], output.output)
        }
    };
    let p = &result[0];
    print(output, &principal_json(p), || {
        format!("{PRINCIPAL_HEADER}{}", principal_row(p))
    });
    Ok(ExitCode::SUCCESS)
}

/// A certificate as JSON: its fields, `revocation_only` (true for a record that only says
/// the serial is revoked, with no registration) and the expiry as RFC 3339 when known.
fn cert_json(c: &CertificateRecord) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("revocation_only".into(), json!(c.registration.is_none()));
        if let Some(at) = c.expires_at() {
            map.insert(
                "expires_at_rfc3339".into(),
                json!(certgate::authz::rfc3339(at / 1000)),
            );
        }
    }
    v
}

fn cert_row(c: &CertificateRecord) -> String {
    let status = if c.revoked {
        format!(
            "revoked ({}){}",
            c.revocation_reason.as_deref().unwrap_or("unspecified"),
            if c.registration.is_none() {
                ", revocation-only record"
            } else {
                ""
            }
        )
    } else if c.expires_at().is_some_and(|at| at < clock::unix_millis()) {
        "expired".to_owned()
    } else {
        "valid".to_owned()
    };
    format!(
        "{:<34} {:<36} {:<21} {status}\n",
        c.serial_number,
        c.principal_id().unwrap_or("-"),
        c.expires_at()
            .map_or_else(|| "-".to_owned(), |at| certgate::authz::rfc3339(at / 1000)),
    )
}

const CERT_HEADER: &str = "SERIAL                             PRINCIPAL                            EXPIRES               STATUS\n";

async fn certificate(cmd: CertCommand, config: &Option<PathBuf>) -> Result<ExitCode, Failure> {
    let (record, output) = match cmd {
        CertCommand::Register {
            cert: path,
            principal,
            force,
            output,
        } => {
            let (config, store) = open_or_create(config_path(config)?).await?;
            let raw = std::fs::read(&path)
                .with_context(|| format!("reading {}", path.display()))
                .map_err(Failure::Usage)?;
            let id = cert::identify(&raw, &config.identity, &config.trust, clock::unix_now())
                .map_err(|e| Failure::Failed(anyhow::anyhow!("{}: {e}", path.display())))?;
            let Some(principal_id) = principal.or(id.principal_id().map(str::to_owned)) else {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "the certificate yields no principal id; pass --principal"
                )));
            };
            if !force {
                if let Err(failure) = id.chain() {
                    return Err(Failure::Failed(anyhow::anyhow!(
                        "{}: {failure}; pass --force to register it anyway",
                        path.display()
                    )));
                }
                if store.get_principal(&principal_id).await?.is_none() {
                    return Err(Failure::Failed(anyhow::anyhow!(
                        "principal '{principal_id}' is not enrolled (certgate principal create \
                         {principal_id} --type TYPE); pass --force to register anyway"
                    )));
                }
            }
            let record = CertificateRecord::for_identity(&id, principal_id);
            store.register_certificate(&record).await?;
            (record, output.output)
        }
        CertCommand::Get { serial, output } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            let serial = normalize_serial(&serial);
            let found = store.get_certificate(&serial).await?.ok_or_else(|| {
                Failure::Failed(
                    StoreError::NotFound {
                        kind: "certificate",
                        key: serial.clone(),
                    }
                    .into(),
                )
            })?;
            (found, output.output)
        }
        CertCommand::List {
            principal,
            expiring_within,
            output,
        } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            let before =
                expiring_within.map(|d| clock::unix_millis().saturating_add(d.as_millis() as i64));
            let now = clock::unix_millis();
            let mut all = store
                .list_certificates(principal.as_deref(), before)
                .await?;
            if before.is_some() {
                all.retain(|c| c.expires_at().is_some_and(|at| at >= now));
            }
            if output.output == Output::Json {
                print(
                    output.output,
                    &Value::Array(all.iter().map(cert_json).collect()),
                    String::new,
                );
            } else {
                emit(CERT_HEADER);
                all.iter().for_each(|c| emit(&cert_row(c)));
            }
            return Ok(ExitCode::SUCCESS);
        }
        CertCommand::Revoke {
            serial,
            reason,
            output,
        } => {
            if !REVOCATION_REASONS.contains(&reason.as_str()) {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--reason must be one of: {}",
                    REVOCATION_REASONS.join(", ")
                )));
            }
            let (_, store) = open_existing(config_path(config)?).await?;
            let serial = normalize_serial(&serial);
            (
                store
                    .revoke_certificate(&serial, &reason, clock::unix_millis())
                    .await?,
                output.output,
            )
        }
    };
    print(output, &cert_json(&record), || {
        format!("{CERT_HEADER}{}", cert_row(&record))
    });
    Ok(ExitCode::SUCCESS)
}

/// Accept serials as openssl prints them (`Serial Number: 1A:2B…`, upper case) too.
fn normalize_serial(text: &str) -> String {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed.to_owned()
    }
}

async fn crl_inspect(
    source: &str,
    config_path: Option<&Path>,
    serial: Option<&str>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let config = config_path.map(Config::load).transpose()?;
    let defaults = crl::CrlConfig::default();
    let settings = config.as_ref().map_or(&defaults, |c| &c.crl);
    let lower = source.to_ascii_lowercase();
    let bytes = if lower.starts_with("http://") || lower.starts_with("https://") {
        let location = crl::CrlSource {
            location: crl::CrlLocation::Url(source.to_owned()),
            refresh_interval: std::time::Duration::from_secs(3600),
        };
        let client = crl::fetch::client(settings.timeout, settings.follow_redirects)
            .map_err(|e| Failure::Failed(e.into()))?;
        match crl::fetch::fetch(
            &client,
            &location,
            &Default::default(),
            settings.max_size,
            settings.timeout,
        )
        .await
        {
            Ok(crl::fetch::Fetched::Body(bytes, _)) => bytes,
            Ok(_) => {
                return Err(Failure::Failed(anyhow::anyhow!(
                    "{source}: unexpected 304 Not Modified"
                )));
            }
            Err(e) => return Err(Failure::Failed(anyhow::anyhow!("{source}: {e}"))),
        }
    } else {
        std::fs::read(source)
            .with_context(|| format!("reading {source}"))
            .map_err(Failure::Usage)?
    };
    let der =
        crl::decode_crl(&bytes).map_err(|e| Failure::Failed(anyhow::anyhow!("{source}: {e}")))?;
    let parsed = crl::ParsedCrl::parse(&der)
        .map_err(|e| Failure::Failed(anyhow::anyhow!("{source}: {e}")))?;
    let now = clock::unix_now();
    let mut failed = false;

    let (signature, signature_text) = match &config {
        None => (
            json!({"checked": false}),
            "not checked (pass --config to check against the trust bundle)".to_owned(),
        ),
        Some(config) => match parsed.verify_signature(config.trust.ca_certificates()) {
            Ok(i) => {
                let key = config.trust.cas().get(i).map(|ca| ca.key);
                (
                    json!({"checked": true, "valid": true, "ca_index": i + 1,
                           "ca_key_sha256": key.map(|k| k.hex())}),
                    format!(
                        "valid: signed by CA #{} of the trust bundle (key {})",
                        i + 1,
                        key.map_or_else(String::new, |k| k.to_string())
                    ),
                )
            }
            Err(e) => {
                failed = true;
                (
                    json!({"checked": true, "valid": false, "error": e.to_string()}),
                    format!("INVALID: {e}"),
                )
            }
        },
    };
    let configured = config.as_ref().and_then(|c| {
        c.crl
            .issuers
            .iter()
            .find(|i| i.subject_der.as_slice() == parsed.issuer_der())
    });
    let freshness = configured.map_or(
        crl::Freshness {
            max_age_secs: 86_400,
            next_update_grace_secs: 0,
        },
        |i| i.freshness,
    );
    let age = now - parsed.this_update;
    let stale = if age > freshness.max_age_secs {
        Some(format!(
            "stale: issued {} ago, max_age {}",
            crl::human(age),
            crl::human(freshness.max_age_secs)
        ))
    } else if now > parsed.next_update + freshness.next_update_grace_secs {
        Some(format!(
            "stale: past nextUpdate by {}",
            crl::human(now - parsed.next_update)
        ))
    } else {
        None
    };
    let entries = parsed.count_entries();
    let listed = match serial {
        None => None,
        Some(text) => {
            let hex_serial = normalize_serial(text);
            let bytes = hex::decode(&hex_serial).map_err(|_| {
                Failure::Usage(anyhow::anyhow!("--serial {text:?} is not hexadecimal"))
            })?;
            let found = parsed
                .find(&bytes)
                .map_err(|e| Failure::Failed(anyhow::anyhow!("{source}: {e}")))?;
            failed |= found.is_some();
            Some((hex_serial, found))
        }
    };
    let value = json!({
        "source": source,
        "issuer": parsed.issuer,
        "this_update": certgate::authz::rfc3339(parsed.this_update),
        "next_update": certgate::authz::rfc3339(parsed.next_update),
        "age_seconds": age,
        "seconds_to_next_update": parsed.next_update - now,
        "entries": entries,
        "sha256": parsed.sha256(),
        "size_bytes": der.len(),
        "signature": signature,
        "configured_issuer": configured.is_some(),
        "fresh": stale.is_none(),
        "stale_reason": stale,
        "serial": listed.as_ref().map(|(s, found)| json!({
            "serial": s,
            "listed": found.is_some(),
            "reason": found.map(|r| r.reason.as_str()),
            "revoked_at": found.map(|r| certgate::authz::rfc3339(r.revoked_at)),
        })),
    });
    print(output, &value, || {
        let mut s = format!(
            "issuer        {}\nthis_update   {} ({} ago)\nnext_update   {} ({})\nentries       {entries}\nsha256        {}\nsize          {} bytes\nsignature     {signature_text}\n",
            parsed.issuer,
            certgate::authz::rfc3339(parsed.this_update),
            crl::human(age),
            certgate::authz::rfc3339(parsed.next_update),
            if parsed.next_update >= now {
                format!("in {}", crl::human(parsed.next_update - now))
            } else {
                format!("{} ago", crl::human(now - parsed.next_update))
            },
            parsed.sha256(),
            der.len(),
        );
        s.push_str(&format!(
            "freshness     {}{}\n",
            stale.as_deref().unwrap_or("fresh"),
            match (&config, configured) {
                (Some(_), None) =>
                    " (issuer not configured under crl.issuers; default max_age 24h)",
                (None, _) => " (default max_age 24h)",
                _ => "",
            }
        ));
        if let Some((serial, found)) = &listed {
            s.push_str(&match found {
                Some(r) => format!(
                    "serial        {serial}: REVOKED ({}) at {}\n",
                    r.reason,
                    certgate::authz::rfc3339(r.revoked_at)
                ),
                None => format!("serial        {serial}: not listed\n"),
            });
        }
        s
    });
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
