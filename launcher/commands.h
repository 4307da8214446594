// The CLI's subcommands, one registration function per area. main.cpp calls each.
#pragma once
#include <CLI/CLI.hpp>

namespace lt::cli {

void add_train_commands(CLI::App& app);  // train, eval, sample        (cmd_train.cpp)
void add_data_commands(CLI::App& app);   // data prepare               (cmd_data.cpp)
void add_bench_commands(CLI::App& app);  // bench step, ...            (cmd_bench.cpp)
void add_lease_commands(CLI::App& app);  // plan, launch, audit        (cmd_lease.cpp)

}  // namespace lt::cli
