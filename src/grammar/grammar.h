// A context-free grammar over bytes (and special tokens), compiled to one small automaton per rule: a
// node's edges consume a byte of a set, consume one special token (by name: bound to an id with the
// vocabulary), or call another rule (push the edge's target, run the rule, return to the target).
// Built with GrammarBuilder from expressions; every front end (JSON schema, regex, EBNF, choice, tool
// calls) emits these. Immutable once built; left recursion is rejected (the matcher is a pushdown
// automaton, not Earley).
#pragma once
#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ds {

using ByteSet = std::bitset<256>;

class Grammar {
 public:
  enum class EdgeKind : uint8_t { Bytes, Special, Ref };
  struct Edge {
    EdgeKind kind;
    int32_t arg;     // Bytes: index into byte_sets(); Special: index into specials(); Ref: rule id
    int32_t target;  // node (global id)
  };
  struct Node {
    int32_t rule = 0;
    bool final = false;           // the rule may end here
    bool scans = false;           // has a Bytes or Special edge
    uint32_t edge_begin = 0, edge_end = 0;
    ByteSet first;                // union of its Bytes edges' sets
  };

  int root() const { return root_; }
  int num_rules() const { return int(rule_start_.size()); }
  int rule_start(int r) const { return rule_start_[size_t(r)]; }
  const std::string& rule_name(int r) const { return rule_names_[size_t(r)]; }
  int num_nodes() const { return int(nodes_.size()); }
  const Node& node(int n) const { return nodes_[size_t(n)]; }
  const Edge* edges_begin(int n) const { return edges_.data() + nodes_[size_t(n)].edge_begin; }
  const Edge* edges_end(int n) const { return edges_.data() + nodes_[size_t(n)].edge_end; }
  const ByteSet& byte_set(int i) const { return byte_sets_[size_t(i)]; }
  const std::vector<std::string>& specials() const { return specials_; }
  // A text that identifies what can follow node n within its rule and the rules it calls (equal
  // signatures: equal token masks), for caching masks across grammars.
  const std::string& signature(int n) const;
  std::string dump() const;  // human-readable, for tests and debugging

 private:
  friend class GrammarBuilder;
  int root_ = 0;
  std::vector<int32_t> rule_start_;
  std::vector<std::string> rule_names_;
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::vector<ByteSet> byte_sets_;
  std::vector<std::string> specials_;
  std::vector<std::string> rule_sig_;  // per rule, filled at build
  std::vector<std::string> node_sig_;
};

// Expressions are ids into the builder; rules are declared by name (forward references allowed) and
// defined once.
class GrammarBuilder {
 public:
  using Expr = int;
  int rule(const std::string& name);             // declares (or finds) a rule
  bool has_rule(const std::string& name) const;
  void define(int rule, Expr body);              // ds::Error when defined twice
  int fresh_rule(const std::string& stem);       // a new rule named stem, stem_1, ...

  Expr empty();
  Expr bytes(const ByteSet& set);                // one byte of the set (an empty set matches nothing)
  Expr byte_range(uint8_t lo, uint8_t hi);
  Expr literal(std::string_view text);           // these bytes in order
  Expr special(const std::string& name);         // one special token, e.g. "<|tool_call_begin|>"
  Expr ref(int rule);
  Expr seq(std::vector<Expr> items);
  Expr alt(std::vector<Expr> items);
  Expr repeat(Expr e, int min, int max);         // max < 0: unbounded
  Expr opt(Expr e) { return repeat(e, 0, 1); }
  Expr star(Expr e) { return repeat(e, 0, -1); }
  Expr plus(Expr e) { return repeat(e, 1, -1); }

  // Compiles every rule reachable from `root`; ds::Error for an undefined rule or left recursion.
  std::shared_ptr<const Grammar> build(int root);

 private:
  enum class Op : uint8_t { Empty, Bytes, Special, Ref, Seq, Alt, Repeat };
  struct Node {
    Op op = Op::Empty;
    int a = 0, b = 0;          // Bytes: set index; Special: name index; Ref: rule; Repeat: min, max
    std::vector<Expr> kids;
  };
  Expr add(Node n);
  std::vector<Node> exprs_;
  std::vector<ByteSet> sets_;
  std::vector<std::string> specials_;
  std::unordered_map<std::string, int> special_index_;
  std::vector<std::string> rule_names_;
  std::unordered_map<std::string, int> rule_index_;
  std::vector<Expr> rule_body_;  // -1: declared, not defined
  friend struct GrammarCompiler;
};

// UTF-8 helpers the front ends share: the byte sequences of code points in [lo, hi] (as an expression
// of alternatives of byte-set sequences), and "any valid UTF-8 character except these ASCII bytes".
GrammarBuilder::Expr utf8_range(GrammarBuilder& b, uint32_t lo, uint32_t hi);
GrammarBuilder::Expr utf8_char_except(GrammarBuilder& b, const ByteSet& excluded_ascii);

}  // namespace ds
