// `leasetrain launch`'s run of a job: each attempt planned, started, recorded (one usage record
// per attempt), and with --restarts N restarted on what is left of the lease after a failure.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lease/launch.h"
#include "lease/lease_plan.h"
#include "lease/manifest.h"
#include "runtime/error.h"  // the trainer's exit codes: kExitBadInput, kExitWatchdog, kExitPreempted

namespace lt::lease {

struct SuperviseOptions {
  const Manifest* manifest = nullptr;
  std::string lease_id;
  PlanRequest request;  // the first attempt's; now, attempt, np and exclude are set per attempt
  std::string signature_note;
  LaunchOptions launch;  // command (absolute program), job_dir, launcher, inherited environment
  EnvFilter env;
  int restarts = 0;          // failures restarted before giving up; preemptions do not count
  int probe_timeout_s = 30;  // per node probe
  bool grow = false;         // re-admit left-out nodes/slots whose probe passes again
  int grow_every_s = 300;    // with grow: probe them this often while the job runs (and on SIGHUP)
  std::vector<std::string> probe_argv;  // `<this binary> probe`, run on each node through the launcher
};

// Runs the job until it completes, gives up or is stopped; returns launch's exit status:
//  - each attempt: make_plan (refuses a lease past its window or over its GPU-hour quota: give
//    up), move the previous attempt's progress.json, rank-*.exit.json and rank-*.json into
//    <job dir>/attempt-<n-1>/, start, copy the launcher's stderr to ours and to
//    <job dir>/attempt-<n>.log, append one usage record (attempt, outcome, reason), rewrite
//    <job dir>/attempts.json;
//  - 0: done. 2 (bad input): give up at once. 75 (preempted, not by us): restart, not counted.
//    Any other failure: name the rank and host (the launcher's report, rank-<r>.exit.json),
//    leave that rank's slot out, probe every node through the launcher (a node that fails or
//    times out is left out), restart on the surviving slots (at most the first attempt's
//    ranks, and a divisor of progress.json's global_batch when known) with `--resume` added to
//    a `train` command; give up after `restarts` failures, or when two attempts in a row end
//    before their first step (crash loop).
//  - SIGTERM, SIGUSR1 or a first SIGINT to launch: SIGUSR1 to the launcher (the ranks
//    checkpoint and exit 75), the attempt is recorded as preempted and launch exits 75; a second
//    SIGINT/SIGTERM is forwarded as SIGTERM. SIGHUP (and every grow_every_s): with `grow`,
//    probe the left-out nodes and slots and, when one passes, preempt the job and restart it
//    larger; without, SIGHUP is forwarded. What a failure leaves out is not taken back by the
//    restart that follows it, only by a later probe.
int supervise(const SuperviseOptions& o);

// What `leasetrain probe --minor M ...` prints on a node: {"host", "cpus" (online), "devices":
// {"<minor>": whether /dev/nvidia<minor> is there}}.
nlohmann::json probe_this_node(const std::vector<int>& minors, const std::string& dev_root = "/dev");

}  // namespace lt::lease
