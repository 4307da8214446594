// `bench compare`, `bench accept` and `report`: reading suite results back (checked against
// suite.schema.json first), machines side by side, the lease-acceptance scorecard, and the
// plots (scripts/plot.py, matplotlib) for people.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lt::bench {

// Reads and schema-checks a suite result; UserError naming the file and the first bad field.
nlohmann::json load_suite_result(const std::string& path);

// A short readable name for a result row ("124m.qkv 8192x2304x768 cublas", "fwd hd64 T1024 flash").
std::string row_label(const nlohmann::json& row);

// Machines side by side: {"machines": [{file, label, device, peak_tflops, price_per_gpu_hour}],
// "rows": [{id, label, suite, metric, unit, values: [..|null], ratios: [value / first value]}]}
// for each row id measured on at least one machine: its primary metric, plus % of peak (GEMM,
// attention) and MFU (step); with prices (one per file, $ per GPU-hour, 0 = none) also tokens
// per dollar for the training step.
nlohmann::json compare_results(const std::vector<nlohmann::json>& results, const std::vector<std::string>& files,
                               const std::vector<double>& prices);
void print_compare(const nlohmann::json& cmp, std::FILE* out);

// Lease acceptance: scores a suite result against the thresholds file (TOML; see
// benchmarks/accept.toml). {"schema": "leasetrain.accept/1", "machine", "thresholds", "entry",
// "checks": [{check, gpu, measured, expected_min, unit, verdict: pass|fail|skip, detail}],
// "verdict": pass|fail}. UserError for a bad thresholds file (file, field, what was expected).
nlohmann::json score_acceptance(const nlohmann::json& result, const std::string& thresholds_path);
void print_scorecard(const nlohmann::json& card, std::FILE* out);

// A training run's metrics.jsonl summarised: steps, first and last loss, last and best
// validation loss, median tokens/s, total time. UserError naming the file and line when a line
// is not a metrics record.
nlohmann::json summarize_run(const std::string& run_dir);

// Two runs of the same job step by step (an interrupted and restarted run against an
// uninterrupted one): {"run", "against", "common_steps", "max_abs_loss_diff",
// "max_rel_loss_diff", "worst_step", "common_val_steps", "max_abs_val_loss_diff"} over the steps
// both recorded (a resumed run's metrics hold each step once). UserError as summarize_run, or
// when the runs share no step.
nlohmann::json compare_runs(const std::string& run_dir, const std::string& against_dir);

// Runs a script shipped in the source tree (source_file(script)) under Debian's /usr/bin/python3
// with `args`; `out` gets everything it printed (stdout and stderr). Its exit status, or -1 when
// python3 could not be started.
int run_python(const std::string& script, const std::vector<std::string>& args, std::string* out);

// Runs scripts/plot.py MODE INPUT OUTDIR [extra...]; returns the files written. std::runtime_error
// with the plotting tool's message when it fails (e.g. python3-matplotlib missing).
std::vector<std::string> run_plot(const std::string& mode, const std::string& input, const std::string& outdir,
                                  const std::vector<std::string>& extra = {});

// A file shipped in the source tree (benchmarks/..., scripts/...): under $LEASETRAIN_HOME when
// set, else the source directory this binary was built from.
std::string source_file(const std::string& rel);

}  // namespace lt::bench
