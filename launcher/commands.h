// The CLI's subcommands, one registration function per area. main.cpp calls each.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace lt::cli {

void add_train_commands(CLI::App& app);  // train, eval, sample        (cmd_train.cpp)
void add_data_commands(CLI::App& app);   // data prepare               (cmd_data.cpp)
void add_bench_commands(CLI::App& app);  // bench step, ...            (cmd_bench.cpp)
void add_lease_commands(CLI::App& app);  // plan, launch, audit        (cmd_lease.cpp)
void add_report_commands(CLI::App& app); // report                     (cmd_bench_suite.cpp)
void add_bench_suite_commands(CLI::App* bench);  // bench suite, compare, accept (cmd_bench_suite.cpp)

// This program's path (to start it again under mpirun, or as a launched job's command).
std::string self_exe();

// --json OUT for every command: '-' prints to stdout, a path is written whole (a temporary file
// renamed into place, so an interrupted run leaves the previous file intact).
void write_json_output(const std::string& path, const nlohmann::json& j);

// Thrown by a command that ran but whose answer is "no" or that could not finish for a reason
// other than bad input (an acceptance check failed, the plotting tool is missing): main prints
// the message, if any, on one line and exits with `code` (1 unless said).
struct CommandFailed : std::runtime_error {
  int code;
  explicit CommandFailed(const std::string& msg, int code = 1) : std::runtime_error(msg), code(code) {}
};

}  // namespace lt::cli
