// `leasetrain plan | launch | audit verify | manifest check|sign|keygen`: the operator's lease
// manifest turned into what a job gets, the job started inside it, and the usage records.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lease/audit.h"
#include "launcher/cli_checks.h"
#include "launcher/cmd_predict.h"
#include "launcher/commands.h"
#include "lease/launch.h"
#include "lease/lease_plan.h"
#include "lease/manifest.h"
#include "lease/manifest_sign.h"
#include "lease/supervise.h"
#include "lease/tenancy.h"
#include "runtime/error.h"
#include "runtime/input.h"

namespace lt::cli {
namespace {

namespace fs = std::filesystem;
using namespace lt::lease;

struct LeaseArgs {
  std::string manifest, lease, sysfs_root, operator_key, at, usage_log;
  int np = 0;
  bool json = false;
};

void add_lease_options(CLI::App* cmd, LeaseArgs& a) {
  cmd->add_option("--manifest", a.manifest,
                  "The operator's lease manifest (TOML). Without it: the embedded local lease of this "
                  "machine's own GPUs, or CPU ranks when it has none");
  cmd->add_option("--lease", a.lease, "Lease id inside the manifest (required with --manifest)");
  cmd->add_option("--np", a.np, "Ranks to start (default: every leased slot, up to quota.max_ranks)")
      ->check(in_range<int>(1, kMaxJobRanks));
  cmd->add_option("--sysfs-root", a.sysfs_root,
                  "Where to read InfiniBand P_Key tables (default $LEASETRAIN_SYSFS_ROOT or /sys)");
  cmd->add_option("--operator-key", a.operator_key,
                  std::string("Operator's Ed25519 public key (PEM) to verify <manifest>.sig with; ") +
                      kSystemOperatorKey + " always wins when present (default $LEASETRAIN_OPERATOR_KEY)");
  cmd->add_option("--usage-log", a.usage_log,
                  "Usage-record log for the embedded local lease (default: none). With a manifest the lease's "
                  "usage_log is the only accounting source: any other file is refused");
  cmd->add_flag("--json", a.json, "Print JSON instead of text");
}

struct Loaded {
  Manifest manifest;
  SignatureInfo sig;
  std::string lease_id, manifest_path;
};

Loaded load(const LeaseArgs& a) {
  Loaded l;
  if (a.manifest.empty()) {
    if (!a.lease.empty() && a.lease != kLocalLeaseId)
      throw UserError("--lease " + a.lease + " needs --manifest (without one, the only lease is '" + kLocalLeaseId + "')");
    l.manifest = local_default_manifest(a.np > 0 ? a.np : 1);
    l.lease_id = kLocalLeaseId;
    l.sig.note = "embedded local lease";
    return l;
  }
  if (a.lease.empty()) throw UserError("--lease is required with --manifest");
  l.manifest_path = fs::absolute(a.manifest).lexically_normal().string();
  l.manifest = load_verified_manifest(l.manifest_path, a.operator_key, &l.sig);
  l.lease_id = a.lease;
  return l;
}

PlanRequest request(const LeaseArgs& a, const Loaded& l, TimePoint now) {
  PlanRequest r;
  r.np = a.np;
  r.now = now;
  const char* env_sysfs = std::getenv("LEASETRAIN_SYSFS_ROOT");
  r.sysfs_root = !a.sysfs_root.empty() ? a.sysfs_root : env_sysfs && *env_sysfs ? env_sysfs : "/sys";
  r.manifest_path = l.manifest_path;
  r.operator_key = l.sig.key_path;
  r.usage_log = a.usage_log;
  return r;
}

// The operator's opt-in to loader/MPI-control variables is loud: one line per variable on
// stderr from `manifest check`, `plan` and `launch`.
void warn_dangerous(const Lease& l) {
  for (const std::string& v : l.policy.allow_dangerous_env)
    std::fprintf(stderr, "leasetrain: warning: lease %s passes %s to its jobs (allow_dangerous_env): it can load code or "
                         "re-point MPI, NCCL or the loader\n", l.id.c_str(), v.c_str());
}

void add_plan(CLI::App& app) {
  auto a = std::make_shared<LeaseArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "Show what a job would get from a lease, per node and rank: slots, device UUID, NIC, the P_Key "
      "index read from the port's sysfs table, and the environment each rank gets. Exits 2 with the "
      "reason when the lease is invalid, not yet valid, expired, over quota, or --np exceeds it.");
  add_lease_options(cmd, *a);
  cmd->add_option("--at", a->at, "Plan as of this UTC time (2025-06-01T00:00:00Z) instead of now");
  auto pa = std::make_shared<PredictArgs>();
  add_predict_options(cmd, *pa);
  cmd->callback([a, pa] {
    if (pa->predict) {
      // The lease gives the topology only when one is named: without --manifest the prediction
      // is for the node counts asked, not this machine's embedded lease.
      pa->json = a->json;
      if (a->manifest.empty()) return run_predict(*pa, nullptr);
      Loaded l = load(*a);
      TimePoint now = a->at.empty() ? system_now() : parse_time(a->at);
      Plan p = make_plan(l.manifest, l.lease_id, request(*a, l, now));
      LeaseTopology t;
      t.id = p.lease_id;
      t.nodes = (int)p.nodes.size();
      for (const NodePlan& n : p.nodes) t.gpus_per_node = std::max(t.gpus_per_node, n.slots);
      t.hours_left = std::chrono::duration<double>(p.deadline - p.now).count() / 3600.0;
      t.gpu_hours_left = p.gpu_seconds_left() / 3600.0;
      return run_predict(*pa, &t);
    }
    Loaded l = load(*a);
    TimePoint now = a->at.empty() ? system_now() : parse_time(a->at);
    Plan p = make_plan(l.manifest, l.lease_id, request(*a, l, now));
    p.signature_note = l.sig.note;
    warn_dangerous(l.manifest.lease(l.lease_id));
    if (a->json) std::cout << plan_json(p).dump(2) << "\n";
    else std::cout << plan_text(p);
  });
}

std::string make_job_id(const std::string& lease_id, TimePoint now) {
  std::string t = format_time(now);
  std::string compact;
  for (char c : t)
    if (c != '-' && c != ':') compact += c;
  return lease_id + "-" + compact + "-" + std::to_string(::getpid());
}

void add_launch(CLI::App& app) {
  auto a = std::make_shared<LeaseArgs>();
  auto opt = std::make_shared<LaunchOptions>();
  auto job_id = std::make_shared<std::string>();
  auto dry_run = std::make_shared<bool>(false);
  auto restarts = std::make_shared<int>(0);
  auto probe_timeout = std::make_shared<int>(30);
  auto grow = std::make_shared<bool>(false);
  auto grow_interval = std::make_shared<int>(300);
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "Start COMMAND on every rank of a lease through mpirun (srun inside a SLURM allocation): writes "
      "a hostfile (slots = leased devices), builds each rank's environment from an allowlist (inherited "
      "NCCL_*/CUDA_* not in the policy are dropped and reported; NCCL_COMM_ID and unapproved "
      "NCCL_NET_PLUGIN are refused), passes every variable with -x, waits, and appends a usage record. "
      "A COMMAND that names a leasetrain subcommand (train, eval, ...) runs this leasetrain binary. "
      "Example: leasetrain launch --manifest m.toml --lease acme-june -- train --config c.toml");
  add_lease_options(cmd, *a);
  cmd->add_flag("--dry-run", *dry_run, "Print the exact command, files and environment; start nothing");
  cmd->add_option("--job-id", *job_id, "Job id for records and the job directory (default: lease-time-pid)");
  cmd->add_option("--job-dir", opt->job_dir,
                  "Where the hostfile, plan and rank records go (default <storage root>/jobs/<job id>; "
                  "$TMPDIR/leasetrain-jobs/<job id> for the local lease)");
  cmd->add_option("--launcher", opt->launcher, "auto (srun when SLURM_JOB_ID is set), mpirun or srun")
      ->capture_default_str();
  cmd->add_option("--mpirun", opt->mpirun, "The mpirun to run")->capture_default_str();
  cmd->add_option("--restarts", *restarts,
                  "Restart the job after up to N failures (a rank's non-zero exit or signal, the watchdog's abort): "
                  "name the failed rank and host, leave its slot out, probe every node through the launcher and "
                  "leave out those that fail, restart on the surviving slots (at most the first attempt's ranks, "
                  "a divisor of the run's global batch) with --resume added to a train command. Gives up at once "
                  "on exit 2 (bad input), a lease past its window or quota, and two attempts in a row that end "
                  "before their first step (crash loop). Exit 75 (preempted) restarts without counting. One usage "
                  "record per attempt; <job dir>/attempts.json sums them up. SIGTERM, SIGUSR1 or a first SIGINT to "
                  "launch: the job checkpoints and stops (SIGUSR1 to every rank), launch exits 75")
      ->check(in_range<int>(0, 1000))
      ->capture_default_str();
  cmd->add_option("--probe-timeout", *probe_timeout, "Seconds a node's probe may take before it is left out")
      ->check(in_range<int>(1, 3600))
      ->capture_default_str();
  cmd->add_flag("--grow", *grow,
                "Take back left-out nodes and slots when they pass a probe again: probed every --grow-interval "
                "seconds while the job runs, on SIGHUP to launch, and at a restart after a preemption; when one "
                "passes, the job checkpoints (exit 75) and restarts larger. What a failure left out is not taken "
                "back by the restart that follows it");
  cmd->add_option("--grow-interval", *grow_interval, "Seconds between the probes of --grow (0: only on SIGHUP)")
      ->check(in_range<int>(0, 86400))
      ->capture_default_str();
  cmd->add_option("command", opt->command, "The program each rank runs, after --")->required();
  cmd->callback([a, opt, job_id, dry_run, restarts, probe_timeout, grow, grow_interval, &app] {
    Loaded l = load(*a);
    TimePoint now = system_now();
    PlanRequest req = request(*a, l, now);
    req.job_id = job_id->empty() ? make_job_id(l.lease_id, now) : *job_id;
    if (req.job_id.size() > 128 || req.job_id == "." || req.job_id == "..")
      throw UserError("--job-id: expected at most 128 letters, digits, '-', '_', '.' (it names a directory)");
    for (char c : req.job_id)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
        throw UserError("--job-id: expected letters, digits, '-', '_', '.', got '" + req.job_id + "'");
    Plan p = make_plan(l.manifest, l.lease_id, req);
    p.signature_note = l.sig.note;
    const Lease& lease = l.manifest.lease(l.lease_id);
    warn_dangerous(lease);

    LaunchOptions o = *opt;
    o.inherited = current_environment();
    o.as_root = ::geteuid() == 0;
    if (o.job_dir.empty()) {
      if (l.manifest.embedded) {
        const char* tmp = std::getenv("TMPDIR");
        o.job_dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/leasetrain-jobs/" + req.job_id;
      } else {
        o.job_dir = lease.storage_roots[0] + "/jobs/" + req.job_id;
      }
    }
    o.job_dir = fs::absolute(o.job_dir).lexically_normal().string();
    // `-- train ...` means this binary's train subcommand, wherever it is installed.
    const std::string& first = o.command[0];
    if (first.find('/') == std::string::npos && first != "launch" &&
        !app.get_subcommands([&](const CLI::App* s) { return s->get_name() == first; }).empty())
      o.command.insert(o.command.begin(), self_exe());

    EnvFilter env = filter_environment(o.inherited, lease.policy);
    LaunchCommand c = build_launch(p, env, o);
    c.files.emplace_back(o.job_dir + "/plan.json", plan_json(p).dump(2) + "\n");

    // Fencing is checked where we can see it: on this node, when the lease holds it.
    std::string host = local_hostname();
    for (const Allocation& al : lease.alloc)
      if (al.node == host) LeaseGuard(l.manifest, l.lease_id, host, {}).enforce_isolation();

    if (*dry_run) {
      if (a->json) std::cout << launch_json(p, env, c).dump(2) << "\n";
      else std::cout << launch_text(p, env, c);
      return;
    }
    if (!env.dropped.empty()) {
      std::string names;
      for (const std::string& n : env.dropped) names += " " + n;
      std::fprintf(stderr, "leasetrain: dropped from the environment (not in lease %s's policy):%s\n",
                   lease.id.c_str(), names.c_str());
    }
    SuperviseOptions so;
    so.manifest = &l.manifest;
    so.lease_id = l.lease_id;
    so.request = req;
    so.signature_note = l.sig.note;
    so.launch = o;
    so.env = env;
    so.restarts = *restarts;
    so.probe_timeout_s = *probe_timeout;
    so.grow = *grow;
    so.grow_every_s = *grow_interval;
    so.probe_argv = {self_exe(), "probe"};
    int status = supervise(so);
    if (status != 0) {
      std::fflush(nullptr);
      std::exit(status);
    }
  });
}

// The hidden `probe` a restart runs on every node through the launcher (lease/supervise.h).
void add_probe(CLI::App& app) {
  auto minors = std::make_shared<std::vector<int>>();
  CLI::App* cmd = app.add_subcommand("probe", "What launch --restarts asks each node: online CPUs, leased devices present");
  cmd->group("");
  cmd->add_option("--minor", *minors, "A leased device's /dev/nvidia<minor> to look for")->check(in_range<int>(0, 4095));
  cmd->callback([minors] { std::cout << probe_this_node(*minors).dump() << "\n"; });
}

void add_audit(CLI::App& app) {
  CLI::App* audit = app.add_subcommand("audit", "Usage records: check the hash chain of a usage log");
  audit->require_subcommand(1);
  auto a = std::make_shared<VerifyOptions>();
  auto file = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* verify = audit->add_subcommand(
      "verify",
      "Check every record of a usage log (JSONL hash chain) in order; report the first altered, "
      "missing, reordered or half-written record and exit 1. The chain alone cannot show records cut "
      "off the end or appended by whoever can write the file: --head or --anchors can. A malformed "
      "record (a field of the wrong type or range), an empty log, or anything but a regular file "
      "exits 2 naming file, line and field.");
  verify->add_option("file", *file, "Usage log (JSONL)")->required();
  verify->add_option("--head", a->head,
                     "The hash the LAST record must have (kept elsewhere after the last append): fails "
                     "when the log ends anywhere else, naming how many records follow it");
  CLI::Option* anchors = verify->add_option("--anchors", a->anchors,
                     "Exported syslog lines holding the anchors each append sends (journalctl -t " +
                         std::string(kAnchorIdent) + " -o cat, /var/log/auth.log, ...; other lines are ignored): "
                         "every anchor of this log must match its record, in order, and the last record must be "
                         "anchored");
  verify->add_option("--anchored-as", a->anchored_as,
                     "The path the log had where it was appended to, when verifying a copy (default: FILE's "
                     "absolute path)")
      ->needs(anchors);
  verify->add_flag("--json", *json, "Print the result as JSON");
  verify->callback([a, file, json] {
    AuditResult r = verify_log(*file, *a);
    if (*json) {
      nlohmann::json j = {{"file", *file}, {"ok", r.ok}, {"records", r.records}, {"head", r.head}};
      if (!a->anchors.empty()) j["anchors"] = r.anchors;
      if (!r.ok) j["bad_line"] = r.bad_line, j["reason"] = r.reason;
      std::cout << j.dump(2) << "\n";
    } else if (r.ok) {
      std::cout << *file << ": " << r.records << " record(s), chain intact, head " << r.head;
      if (!a->head.empty()) std::cout << " (the expected head)";
      if (!a->anchors.empty()) std::cout << "; " << r.anchors << " anchor(s) match, the last record is anchored";
      std::cout << "\n";
    }
    if (!r.ok) {
      std::fprintf(stderr, "leasetrain: %s: %s\n", file->c_str(), r.reason.c_str());
      std::fflush(nullptr);
      std::exit(1);
    }
  });
}

void add_manifest(CLI::App& app) {
  CLI::App* man = app.add_subcommand("manifest", "Lease manifests: check, sign, make an operator key");
  man->require_subcommand(1);
  struct Args {
    std::string manifest, key, out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* check = man->add_subcommand(
      "check", "Parse and validate a manifest (and its signature when a key is configured); print its leases");
  check->add_option("manifest", a->manifest, "Manifest (TOML)")->required();
  check->add_option("--operator-key", a->key, "Operator public key (PEM)");
  check->callback([a] {
    SignatureInfo si;
    Manifest m = load_verified_manifest(a->manifest, a->key, &si);
    std::cout << a->manifest << ": valid; " << m.nodes.size() << " node(s), " << m.tenants.size() << " tenant(s), "
              << m.leases.size() << " lease(s); sha256 " << m.sha256 << "; " << si.note << "\n";
    for (const Lease& l : m.leases) {
      std::cout << "  " << l.id << " tenant " << l.tenant << " " << format_time(l.not_before) << " .. "
                << format_time(l.not_after) << " slots " << l.total_slots() << "\n";
      warn_dangerous(l);
    }
  });
  CLI::App* sign = man->add_subcommand(
      "sign", "Sign a manifest with the operator's Ed25519 private key (PEM); writes <manifest>.sig");
  sign->add_option("manifest", a->manifest, "Manifest (TOML)")->required();
  sign->add_option("--key", a->key, "Operator private key (PEM, PKCS#8)")->required();
  sign->callback([a] {
    // Never sign an invalid manifest.
    parse_manifest(read_regular_file(a->manifest, "lease manifest", kMaxManifestBytes), a->manifest);
    sign_file(a->manifest, a->key);
    std::cout << a->manifest << ".sig written\n";
  });
  CLI::App* keygen = man->add_subcommand("keygen", "Make an operator key pair: PREFIX.key (private) and PREFIX.pub");
  keygen->add_option("--out", a->out, "Path prefix, e.g. /etc/leasetrain/operator")->required();
  keygen->callback([a] {
    generate_keypair(a->out);
    std::cout << a->out << ".key and " << a->out << ".pub written; copy the .pub to " << kSystemOperatorKey
              << " on every node\n";
  });
}

}  // namespace

std::string self_exe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("leasetrain") : p.string();
}

void add_lease_commands(CLI::App& app) {
  add_plan(app);
  add_launch(app);
  add_probe(app);
  add_audit(app);
  add_manifest(app);
}

}  // namespace lt::cli
