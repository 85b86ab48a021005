//! The one table of entities and params, shared by the command line, YAML and `--help`
//! (spec/control-work-config.md §3.3, spec/wire.md §1.7).

use std::fmt::Write as _;

/// The type of a param's value (conversion rules in [`super::value`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text; also accepts ints, floats and bools.
    Str,
    /// A 64-bit integer with automatic base (`0600` octal, `0x` hex).
    Int,
    /// A float64.
    Float,
    /// A Go-style boolean (`1 t T Y true yes …`).
    Bool,
    /// A list of strings: repeated keys append; `[...]` is a JSON list.
    StrList,
    /// A map from string to float: a JSON object or a YAML mapping.
    FloatMap,
    /// A Go duration string (`1m30s`).
    Duration,
    /// JSON data (YAML or JSON text).
    Json,
    /// A list of maps with string values (firewall rules).
    RuleList,
}

impl Kind {
    /// How `--help` names the value.
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Str => "<string>",
            Kind::Int => "<int>",
            Kind::Float => "<float>",
            Kind::Bool => "<bool>",
            Kind::StrList => "<string> (repeatable, or a JSON list)",
            Kind::FloatMap => "<JSON object of floats>",
            Kind::Duration => "<duration>",
            Kind::Json => "<JSON>",
            Kind::RuleList => "<JSON list of objects>",
        }
    }
}

/// One param of an entity.
#[derive(Debug)]
pub(crate) struct Param {
    /// Lower-case key.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) required: bool,
    /// Whether a value without `key=` goes here.
    pub(crate) bare: bool,
    /// Applied (through the normal conversion) when the param is absent.
    pub(crate) default: Option<&'static str>,
    /// Shown only in help, for defaults that are not a fixed text (e.g. the host name).
    pub(crate) default_note: Option<&'static str>,
    pub(crate) help: &'static str,
}

const fn p(name: &'static str, kind: Kind, help: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        bare: false,
        default: None,
        default_note: None,
        help,
    }
}

impl Param {
    const fn req(mut self) -> Self {
        self.required = true;
        self
    }
    const fn bare(mut self) -> Self {
        self.bare = true;
        self
    }
    const fn def(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }
    const fn note(mut self, text: &'static str) -> Self {
        self.default_note = Some(text);
        self
    }
}

/// Groups entities in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Core,
    Tls,
    Services,
    Backends,
    Work,
    Certificates,
}

impl Section {
    const ALL: [Section; 6] = [
        Section::Core,
        Section::Tls,
        Section::Services,
        Section::Backends,
        Section::Work,
        Section::Certificates,
    ];

    fn title(self) -> &'static str {
        match self {
            Section::Core => "Core",
            Section::Tls => "TLS configurations (referenced by name)",
            Section::Services => "Control and services",
            Section::Backends => "Backends (mesh connections)",
            Section::Work => "Work",
            Section::Certificates => "Certificates (run alone, then exit)",
        }
    }
}

/// One entity (`--name` on the command line, `- name:` in YAML).
#[derive(Debug)]
pub(crate) struct EntitySpec {
    /// Lower-case name.
    pub(crate) name: &'static str,
    pub(crate) section: Section,
    pub(crate) help: &'static str,
    /// May appear once.
    pub(crate) singleton: bool,
    /// Must be the only entity.
    pub(crate) exclusive: bool,
    /// Not shown in help.
    pub(crate) hidden: bool,
    pub(crate) params: &'static [Param],
}

const fn e(
    name: &'static str,
    section: Section,
    help: &'static str,
    params: &'static [Param],
) -> EntitySpec {
    EntitySpec {
        name,
        section,
        help,
        singleton: false,
        exclusive: false,
        hidden: false,
        params,
    }
}

impl EntitySpec {
    const fn singleton(mut self) -> Self {
        self.singleton = true;
        self
    }
    const fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }
    const fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// The param named `key` (already lower-cased).
    pub(crate) fn param(&self, key: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == key)
    }

    /// The barevalue param, if the entity has one.
    pub(crate) fn bare_param(&self) -> Option<&'static Param> {
        self.params.iter().find(|p| p.bare)
    }

    /// `a, b, c`: the valid keys, for "unknown field name" messages.
    pub(crate) fn param_names(&self) -> String {
        if self.params.is_empty() {
            return "(none)".to_owned();
        }
        self.params
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// --- shared params ---

const BINDADDR: Param = p("bindaddr", Kind::Str, "Local address to bind to").def("0.0.0.0");
const COST: Param = p("cost", Kind::Float, "Connection cost (weight), > 0").def("1.0");
const NODECOST: Param = p(
    "nodecost",
    Kind::FloatMap,
    "Per-node costs overriding cost, e.g. {\"node2\": 2.5}",
);
const ALLOWEDPEERS: Param = p(
    "allowedpeers",
    Kind::StrList,
    "Node IDs allowed to connect (default: everyone)",
);
const REDIAL: Param = p("redial", Kind::Bool, "Keep redialling on lost connection").def("true");
const LISTEN_TLS: Param = p(
    "tls",
    Kind::Str,
    "Name of the tls-server configuration to use",
);
const DIAL_TLS: Param = p(
    "tls",
    Kind::Str,
    "Name of the tls-client configuration to use",
);
const PERMISSIONS: Param = p("permissions", Kind::Int, "Socket file permissions").def("0600");
const NOT_BEFORE: Param = p(
    "notbefore",
    Kind::Str,
    "Effective (NotBefore) date/time, in RFC 3339 format",
);
const NOT_AFTER: Param = p(
    "notafter",
    Kind::Str,
    "Expiration (NotAfter) date/time, in RFC 3339 format",
);
const VERIFY_SIGNATURE: Param = p(
    "verifysignature",
    Kind::Bool,
    "Verify a signed work submission",
)
.def("false");

/// Every entity, in help order.
pub(crate) static ENTITIES: &[EntitySpec] = &[
    // --- core ---
    e(
        "node",
        Section::Core,
        "Node configuration of this instance; added with defaults when absent",
        &[
            p("id", Kind::Str, "Node ID")
                .bare()
                .note("the host name"),
            p("datadir", Kind::Str, "Directory in which to store node data").def("/tmp/receptor"),
            p(
                "firewallrules",
                Kind::RuleList,
                "Firewall rules: objects with action (accept/reject/drop) and optional fromnode, tonode, fromservice, toservice",
            ),
            p(
                "maxidleconnectiontimeout",
                Kind::Duration,
                "Idle time before a backend connection is dropped (at least 21s)",
            )
            .def("21s"),
            p(
                "remoteunreachabletimeout",
                Kind::Duration,
                "How long a remote node may stay unreachable before work sent to it fails (Rust extension)",
            )
            .def("10m"),
            p(
                "workretention",
                Kind::Duration,
                "How long finished work units are kept before they are released automatically; 0 keeps them until released (Rust extension)",
            )
            .def("0s"),
            p(
                "workttl",
                Kind::Duration,
                "Default ttl of remote work submitted without one: a unit not started on its remote node within it fails; 0 means no expiry (Rust extension)",
            )
            .def("0s"),
            p("receptorkubesupportreconnect", Kind::Str, "Kubernetes log reconnect support (v2 configuration only)"),
            p("receptorkubeclientsetqps", Kind::Str, "Kubernetes client QPS (v2 configuration only)"),
            p("receptorkubeclientsetburst", Kind::Str, "Kubernetes client burst (v2 configuration only)"),
            p(
                "receptorkubeclientsetratelimiter",
                Kind::Str,
                "Kubernetes client rate limiter (v2 configuration only)",
            ),
        ],
    )
    .singleton(),
    e(
        "local-only",
        Section::Core,
        "Run a self-contained node with no backends",
        &[p("local", Kind::Bool, "Local node only (unused)")],
    )
    .singleton(),
    e("version", Section::Core, "Show the version and exit", &[]).exclusive(),
    e(
        "log-level",
        Section::Core,
        "Set the log level; info when absent",
        &[p("level", Kind::Str, "Log level: error, warning, info or debug")
            .bare()
            .def("error")],
    )
    .singleton(),
    e("trace", Section::Core, "Enable packet tracing output (no effect)", &[]).singleton(),
    // --- telemetry (Rust extension) ---
    e(
        "telemetry",
        Section::Core,
        "Export OpenTelemetry traces over OTLP/gRPC (Rust extension); OTEL_* variables fill what is not set",
        &[
            p(
                "endpoint",
                Kind::Str,
                "OTLP/gRPC collector URL, e.g. http://127.0.0.1:4317 (https:// with tls)",
            )
            .note("$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_ENDPOINT or http://localhost:4317"),
            p(
                "tls",
                Kind::Str,
                "TLS client configuration for an https:// endpoint (host name checked, ALPN h2)",
            ),
            p("servicename", Kind::Str, "service.name of the exported spans")
                .note("$OTEL_SERVICE_NAME or receptor"),
            p(
                "sampleratio",
                Kind::Float,
                "Fraction of new traces to sample, 0 to 1 (remote parents decide for their traces)",
            )
            .note("$OTEL_TRACES_SAMPLER or 1"),
        ],
    )
    .singleton(),
    // --- TLS ---
    e(
        "tls-server",
        Section::Tls,
        "Define a TLS server configuration",
        &[
            p("name", Kind::Str, "Name of this TLS server configuration").req(),
            p("cert", Kind::Str, "Server certificate filename").req(),
            p("key", Kind::Str, "Server private key filename").req(),
            p("requireclientcert", Kind::Bool, "Require client certificates").def("false"),
            p("clientcas", Kind::Str, "Filename of CA bundle to verify client certs with"),
            p(
                "pinnedclientcert",
                Kind::StrList,
                "Pinned fingerprint of required client certificate (hex SHA-256 or SHA-512)",
            ),
            p(
                "skipreceptornamescheck",
                Kind::Bool,
                "Skip verifying ReceptorNames OIDs in certificate at startup",
            )
            .def("false"),
            p("mintls13", Kind::Bool, "Set minimum TLS version to 1.3").def("false"),
        ],
    ),
    e(
        "tls-client",
        Section::Tls,
        "Define a TLS client configuration",
        &[
            p("name", Kind::Str, "Name of this TLS client configuration").req(),
            p("cert", Kind::Str, "Client certificate filename (with key)"),
            p("key", Kind::Str, "Client private key filename (with cert)"),
            p("rootcas", Kind::Str, "Root CA bundle to use instead of system trust"),
            p("insecureskipverify", Kind::Bool, "Accept any server cert").def("false"),
            p(
                "pinnedservercert",
                Kind::StrList,
                "Pinned fingerprint of required server certificate (hex SHA-256 or SHA-512)",
            ),
            p(
                "skipreceptornamescheck",
                Kind::Bool,
                "Skip verifying ReceptorNames OIDs in certificate at startup",
            )
            .def("false"),
            p("mintls13", Kind::Bool, "Set minimum TLS version to 1.3").def("false"),
        ],
    ),
    // --- control and services ---
    e(
        "control-service",
        Section::Services,
        "Run a control service",
        &[
            p("service", Kind::Str, "Receptor service name to listen on").def("control"),
            p("filename", Kind::Str, "Filename of local Unix socket to bind to the service"),
            PERMISSIONS,
            p("tls", Kind::Str, "Name of the tls-server configuration for the mesh listener"),
            p("tcplisten", Kind::Str, "Local TCP port or host:port to bind to the control service"),
            p("tcptls", Kind::Str, "Name of the tls-server configuration for the TCP listener"),
        ],
    ),
    e(
        "grpc-service",
        Section::Services,
        "Serve the gRPC control API (Rust extension)",
        &[
            p("filename", Kind::Str, "Filename of local Unix socket to serve gRPC on"),
            PERMISSIONS,
            p("tcplisten", Kind::Str, "Local TCP port or host:port to serve gRPC on"),
            p("tcptls", Kind::Str, "Name of the tls-server configuration for the TCP listener"),
        ],
    ),
    e(
        "metrics",
        Section::Services,
        "Serve Prometheus metrics over HTTP (Rust extension; off unless given)",
        &[
            p("listen", Kind::Str, "Local TCP port or host:port to serve on").req().bare(),
            p("path", Kind::Str, "URL path of the metrics").def("/metrics"),
        ],
    )
    .singleton(),
    e(
        "command-service",
        Section::Services,
        "Run an interactive command via a Receptor service",
        &[
            p("service", Kind::Str, "Receptor service name to bind to").req(),
            p("command", Kind::Str, "Command to execute on a connection").req(),
            LISTEN_TLS,
        ],
    ),
    e(
        "ip-router",
        Section::Services,
        "Run an IP router using a tun interface",
        &[
            p("networkname", Kind::Str, "Name of this network and service").req(),
            p("interface", Kind::Str, "Name of the local tun interface"),
            p("localnet", Kind::Str, "Local /30 CIDR address").req(),
            p("routes", Kind::Str, "Comma separated list of CIDR subnets to advertise"),
        ],
    ),
    e(
        "tcp-server",
        Section::Services,
        "Listen for TCP and forward via Receptor",
        &[
            p("port", Kind::Int, "Local TCP port to bind to").req(),
            BINDADDR,
            p("remotenode", Kind::Str, "Receptor node to forward to").req(),
            p("remoteservice", Kind::Str, "Receptor service name to connect to").req(),
            p("tlsserver", Kind::Str, "Name of TLS server config for the TCP listener"),
            p("tlsclient", Kind::Str, "Name of TLS client config for the Receptor connection"),
        ],
    ),
    e(
        "tcp-client",
        Section::Services,
        "Listen on a Receptor service and forward via TCP",
        &[
            p("service", Kind::Str, "Receptor service name to bind to").req(),
            p("address", Kind::Str, "Address for outbound TCP connection (host:port)").req(),
            p("tlsserver", Kind::Str, "Name of TLS server config for the Receptor service"),
            p("tlsclient", Kind::Str, "Name of TLS client config for the TCP connection"),
        ],
    ),
    e(
        "udp-server",
        Section::Services,
        "Listen for UDP and forward via Receptor",
        &[
            p("port", Kind::Int, "Local UDP port to bind to").req(),
            BINDADDR,
            p("remotenode", Kind::Str, "Receptor node to forward to").req(),
            p("remoteservice", Kind::Str, "Receptor service name to connect to").req(),
        ],
    ),
    e(
        "udp-client",
        Section::Services,
        "Listen on a Receptor service and forward via UDP",
        &[
            p("service", Kind::Str, "Receptor service name to bind to").req(),
            p("address", Kind::Str, "Address for outbound UDP connection (host:port)").req(),
        ],
    ),
    e(
        "unix-socket-server",
        Section::Services,
        "Listen on a Unix socket and forward via Receptor",
        &[
            p("filename", Kind::Str, "Socket filename, which will be overwritten").req(),
            PERMISSIONS,
            p("remotenode", Kind::Str, "Receptor node to forward to").req(),
            p("remoteservice", Kind::Str, "Receptor service name to connect to").req(),
            DIAL_TLS,
        ],
    ),
    e(
        "unix-socket-client",
        Section::Services,
        "Listen via Receptor and forward to a Unix socket",
        &[
            p("service", Kind::Str, "Receptor service name to bind to").req(),
            p("filename", Kind::Str, "Socket filename, which must already exist").req(),
            LISTEN_TLS,
        ],
    ),
    // --- backends ---
    e(
        "tcp-listener",
        Section::Backends,
        "Run a backend listener on a TCP port",
        &[
            p("port", Kind::Int, "Local TCP port to listen on").req().bare(),
            BINDADDR,
            LISTEN_TLS,
            COST,
            NODECOST,
            ALLOWEDPEERS,
        ],
    ),
    e(
        "tcp-peer",
        Section::Backends,
        "Make an outbound backend connection to a TCP peer",
        &[
            p("address", Kind::Str, "Remote address (host:port) to connect to")
                .req()
                .bare(),
            REDIAL,
            DIAL_TLS,
            COST,
            ALLOWEDPEERS,
        ],
    ),
    e(
        "udp-listener",
        Section::Backends,
        "Run a backend listener on a UDP port",
        &[
            p("port", Kind::Int, "Local UDP port to listen on").req().bare(),
            BINDADDR,
            COST,
            NODECOST,
            ALLOWEDPEERS,
        ],
    ),
    e(
        "udp-peer",
        Section::Backends,
        "Make an outbound backend connection to a UDP peer",
        &[
            p("address", Kind::Str, "Remote address (host:port) to connect to")
                .req()
                .bare(),
            REDIAL,
            COST,
            ALLOWEDPEERS,
        ],
    ),
    e(
        "ws-listener",
        Section::Backends,
        "Run an http server that accepts websocket connections",
        &[
            p("port", Kind::Int, "Local TCP port to run http server on").req().bare(),
            BINDADDR,
            p("path", Kind::Str, "URI path to the websocket server").def("/"),
            LISTEN_TLS,
            COST,
            NODECOST,
            ALLOWEDPEERS,
        ],
    ),
    e(
        "ws-peer",
        Section::Backends,
        "Connect outbound to a websocket peer",
        &[
            p("address", Kind::Str, "URL to connect to (ws:// or wss://)")
                .req()
                .bare(),
            REDIAL,
            p("extraheader", Kind::Str, "Sends extra HTTP header on initial connection (Name:value)"),
            DIAL_TLS,
            COST,
            ALLOWEDPEERS,
        ],
    ),
    // --- work ---
    e(
        "work-command",
        Section::Work,
        "Run a worker using an external command",
        &[
            p("worktype", Kind::Str, "Name for this worker type").req(),
            p("command", Kind::Str, "Command to run to process units of work").req(),
            p("params", Kind::Str, "Command-line parameters"),
            p("allowruntimeparams", Kind::Bool, "Allow users to add more parameters").def("false"),
            VERIFY_SIGNATURE,
        ],
    ),
    e(
        "work-kubernetes",
        Section::Work,
        "Run a worker using Kubernetes",
        &[
            p("worktype", Kind::Str, "Name for this worker type").req(),
            p("namespace", Kind::Str, "Kubernetes namespace to create pods in"),
            p("image", Kind::Str, "Container image to use for the worker pod"),
            p("command", Kind::Str, "Command to run in the container (overrides entrypoint)"),
            p("params", Kind::Str, "Command-line parameters to pass to the entrypoint"),
            p("authmethod", Kind::Str, "One of: kubeconfig, incluster, runtime").def("incluster"),
            p("kubeconfig", Kind::Str, "Kubeconfig filename (for authmethod=kubeconfig)"),
            p("pod", Kind::Str, "Pod definition filename, in json or yaml format"),
            p("allowruntimeauth", Kind::Bool, "Allow passing API parameters at runtime").def("false"),
            p("allowruntimecommand", Kind::Bool, "Allow specifying image & command at runtime")
                .def("false"),
            p("allowruntimeparams", Kind::Bool, "Allow adding command parameters at runtime")
                .def("false"),
            p("allowruntimepod", Kind::Bool, "Allow passing Pod definition at runtime").def("false"),
            p("deletepodonrestart", Kind::Bool, "On restart, delete the pod if in pending state")
                .def("true"),
            p("streammethod", Kind::Str, "Method for connecting to worker pods: logger or tcp")
                .def("logger"),
            VERIFY_SIGNATURE,
        ],
    ),
    e(
        "work-python",
        Section::Work,
        "Run a worker using a Python plugin (deprecated, always fails)",
        &[
            p("worktype", Kind::Str, "Name for this worker type").req(),
            p("plugin", Kind::Str, "Python module name of the worker plugin").req(),
            p("function", Kind::Str, "Receptor-exported function to call").req(),
            p("config", Kind::Json, "Plugin-specific configuration"),
        ],
    ),
    e(
        "work-signing",
        Section::Work,
        "Private key to sign work submissions",
        &[
            p("privatekey", Kind::Str, "Private key to sign work submissions").bare(),
            p("tokenexpiration", Kind::Duration, "Expiration of the signed JWT, e.g. 3h or 3h30m")
                .def("5m"),
        ],
    )
    .singleton(),
    e(
        "work-verification",
        Section::Work,
        "Public key to verify signed work submissions",
        &[p("publickey", Kind::Str, "Public key to verify signed work submissions").bare()],
    )
    .singleton(),
    e(
        "command-runner",
        Section::Work,
        "Run a command and record its status in a unit directory (internal)",
        &[
            p("command", Kind::Str, "Command to run").req(),
            p("params", Kind::Str, "Command parameters").req(),
            p("unitdir", Kind::Str, "Unit directory").req(),
        ],
    )
    .singleton()
    .hidden(),
    // --- certificates ---
    e(
        "cert-init",
        Section::Certificates,
        "Initialize PKI CA",
        &[
            p("commonname", Kind::Str, "Common name to assign to the certificate").req(),
            p("bits", Kind::Int, "Bit length of the encryption keys of the certificate").req(),
            NOT_BEFORE,
            NOT_AFTER,
            p("outcert", Kind::Str, "File to save the CA certificate to").req(),
            p("outkey", Kind::Str, "File to save the CA private key to").req(),
        ],
    )
    .exclusive(),
    e(
        "cert-makereq",
        Section::Certificates,
        "Create certificate request",
        &[
            p("commonname", Kind::Str, "Common name to assign to the certificate").req(),
            p("bits", Kind::Int, "Bit length of the encryption keys (with outkey)"),
            p("dnsname", Kind::StrList, "DNS names to add to the certificate"),
            p("ipaddress", Kind::StrList, "IP addresses to add to the certificate"),
            p("nodeid", Kind::StrList, "Receptor node IDs to add to the certificate"),
            p("outreq", Kind::Str, "File to save the certificate request to").req(),
            p("inkey", Kind::Str, "Private key to use for the request"),
            p("outkey", Kind::Str, "File to save the new private key to"),
        ],
    )
    .exclusive(),
    e(
        "cert-signreq",
        Section::Certificates,
        "Sign request and produce certificate",
        &[
            p("req", Kind::Str, "Certificate request filename").req(),
            p("cacert", Kind::Str, "CA certificate filename").req(),
            p("cakey", Kind::Str, "CA private key filename").req(),
            NOT_BEFORE,
            NOT_AFTER,
            p("outcert", Kind::Str, "File to save the signed certificate to").req(),
            p("verify", Kind::Bool, "If true, do not prompt the user for verification").def("false"),
        ],
    )
    .exclusive(),
];

/// The entity called `name` (exact, lower-case match).
pub(crate) fn entity(name: &str) -> Option<&'static EntitySpec> {
    ENTITIES.iter().find(|e| e.name == name)
}

/// The usage text printed by `--help` and by a bare `receptor`.
pub(crate) fn help() -> String {
    let mut out = String::new();
    out.push_str(
        "Usage: receptor [--<entity> [<param>=<value> | <value>] ...] ... [--config|-c <file.yaml>] ...\n\n\
         Runs a Receptor mesh node. Entities come from the command line and from YAML files\n\
         (a list of one-key mappings), in order. Entity names and params are case-insensitive.\n\n\
         Options:\n  \
         --help, -h                 Show this help and exit\n  \
         --config, -c <file.yaml>   Load entities from a YAML file (may be repeated)\n  \
         --version                  Show the version and exit\n  \
         --bash-completion          Print a bash completion script and exit\n",
    );
    for section in Section::ALL {
        let _ = write!(out, "\n{}:\n", section.title());
        for spec in ENTITIES
            .iter()
            .filter(|e| e.section == section && !e.hidden)
        {
            let mut flags = Vec::new();
            if spec.singleton {
                flags.push("only once");
            }
            if spec.exclusive {
                flags.push("alone");
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" ({})", flags.join(", "))
            };
            let _ = writeln!(out, "  --{}: {}{}", spec.name, spec.help, flags);
            for param in spec.params {
                let mut notes = Vec::new();
                if param.required {
                    notes.push("required".to_owned());
                }
                if param.bare {
                    notes.push("may be given bare".to_owned());
                }
                if let Some(d) = param.default_note.or(param.default) {
                    notes.push(format!("default: {d}"));
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", notes.join("; "))
                };
                let _ = writeln!(
                    out,
                    "      {}={}: {}{}",
                    param.name,
                    param.kind.placeholder(),
                    param.help,
                    notes
                );
            }
        }
    }
    out
}

/// A bash completion script for the entity names.
pub(crate) fn bash_completion() -> String {
    let words: Vec<String> = ["--help", "--config", "--bash-completion"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(
            ENTITIES
                .iter()
                .filter(|e| !e.hidden)
                .map(|e| format!("--{}", e.name)),
        )
        .collect();
    format!(
        "_receptor() {{\n    local cur=\"${{COMP_WORDS[COMP_CWORD]}}\"\n    COMPREPLY=( $(compgen -W \"{}\" -- \"$cur\") )\n}}\ncomplete -o default -F _receptor receptor\n",
        words.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::value;

    #[test]
    fn table_is_consistent() {
        let mut names = std::collections::BTreeSet::new();
        for spec in ENTITIES {
            assert!(names.insert(spec.name), "duplicate entity {}", spec.name);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(
                spec.params.iter().filter(|p| p.bare).count() <= 1,
                "{}",
                spec.name
            );
            let mut keys = std::collections::BTreeSet::new();
            for param in spec.params {
                assert!(keys.insert(param.name), "{}.{}", spec.name, param.name);
                assert_eq!(param.name, param.name.to_ascii_lowercase());
                assert!(!(param.required && param.default.is_some()));
                if let Some(default) = param.default {
                    value::from_text(param.kind, default).unwrap_or_else(|e| {
                        panic!(
                            "default of {}.{} does not convert: {e}",
                            spec.name, param.name
                        )
                    });
                }
            }
        }
    }

    #[test]
    fn help_lists_entities_and_params() {
        let text = help();
        for needle in [
            "--node",
            "datadir=<string>",
            "[default: /tmp/receptor]",
            "--tcp-listener",
            "port=<int>: Local TCP port to listen on [required; may be given bare]",
            "--cert-init",
            "--work-command",
        ] {
            assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
        }
        assert!(!text.contains("--command-runner"));
    }
}
