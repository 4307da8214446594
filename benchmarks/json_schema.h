// A small JSON Schema checker for the files leasetrain writes and reads back (suite results,
// scorecards): type (one or a list), properties, required, additionalProperties, items, enum,
// minimum and local $ref ("#/$defs/NAME"). Enough to say "every field present and typed" and to
// name the first field that is not, as `machine.gpu.sm_count: expected integer, got string`.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lt::bench {

// "" when `doc` matches `schema`, else the first mismatch: a dotted path ("results[3].metrics")
// and what was expected there.
std::string check_schema(const nlohmann::json& doc, const nlohmann::json& schema);

// The suite's schema (benchmarks/suite.schema.json, compiled in).
const nlohmann::json& suite_schema();

}  // namespace lt::bench
