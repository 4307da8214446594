// See json_schema.h.
#include "benchmarks/json_schema.h"

#include "runtime/input.h"

namespace lt::bench {

using json = nlohmann::json;

namespace {

std::string type_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "integer";
    case json::value_t::number_float: return "number";
    case json::value_t::string: return "string";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    default: return "other";
  }
}

bool is_type(const json& v, const std::string& t) {
  const std::string actual = type_of(v);
  if (t == "number") return actual == "number" || actual == "integer";
  if (t == "integer" && actual == "number") {  // 3.0 is an integer to JSON Schema
    const double d = v.get<double>();
    return d == (double)(int64_t)d;
  }
  return actual == t;
}

std::string join(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

std::string check(const json& doc, const json& schema, const json& root, const std::string& path) {
  const std::string where = path.empty() ? "(top level)" : path;
  if (schema.contains("$ref")) {
    const std::string ref = schema["$ref"].get<std::string>();
    const std::string prefix = "#/$defs/";
    if (ref.rfind(prefix, 0) != 0 || !root.contains("$defs") || !root["$defs"].contains(ref.substr(prefix.size())))
      return where + ": schema error: unknown $ref '" + ref + "'";
    return check(doc, root["$defs"][ref.substr(prefix.size())], root, path);
  }
  if (schema.contains("type")) {
    const json& t = schema["type"];
    bool ok = false;
    std::string expected;
    for (const json& one : t.is_array() ? t : json::array({t})) {
      ok = ok || is_type(doc, one.get<std::string>());
      expected += (expected.empty() ? "" : " or ") + one.get<std::string>();
    }
    if (!ok) return where + ": expected " + expected + ", got " + type_of(doc);
  }
  if (schema.contains("enum")) {
    bool ok = false;
    std::string expected;
    for (const json& e : schema["enum"]) {
      ok = ok || e == doc;
      expected += (expected.empty() ? "" : ", ") + e.dump();
    }
    if (!ok) return where + ": expected one of " + expected + ", got " + json_excerpt(doc);
  }
  if (schema.contains("minimum") && doc.is_number() && doc.get<double>() < schema["minimum"].get<double>())
    return where + ": expected at least " + schema["minimum"].dump() + ", got " + json_excerpt(doc);
  if (doc.is_object()) {
    if (schema.contains("required"))
      for (const json& k : schema["required"])
        if (!doc.contains(k.get<std::string>())) return join(path, k.get<std::string>()) + ": missing";
    const json props = schema.value("properties", json::object());
    for (const auto& [k, v] : doc.items()) {
      if (props.contains(k)) {
        if (std::string e = check(v, props[k], root, join(path, k)); !e.empty()) return e;
      } else if (schema.contains("additionalProperties")) {
        const json& ap = schema["additionalProperties"];
        if (ap.is_boolean() && !ap.get<bool>()) return join(path, k) + ": not a known field";
        if (ap.is_object())
          if (std::string e = check(v, ap, root, join(path, k)); !e.empty()) return e;
      }
    }
  }
  if (doc.is_array() && schema.contains("items"))
    for (size_t i = 0; i < doc.size(); i++)
      if (std::string e = check(doc[i], schema["items"], root, path + "[" + std::to_string(i) + "]"); !e.empty())
        return e;
  return "";
}

}  // namespace

std::string check_schema(const json& doc, const json& schema) { return check(doc, schema, schema, ""); }

const json& suite_schema() {
  static const json s = json::parse(
#include "suite_schema.inc"
  );
  return s;
}

}  // namespace lt::bench
