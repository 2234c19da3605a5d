#include "grammar/grammar.h"

#include <algorithm>
#include <functional>
#include <map>

#include <fmt/format.h>

#include "core/error.h"

namespace ds {

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

int GrammarBuilder::rule(const std::string& name) {
  auto it = rule_index_.find(name);
  if (it != rule_index_.end()) return it->second;
  const int id = int(rule_names_.size());
  rule_names_.push_back(name);
  rule_body_.push_back(-1);
  rule_index_.emplace(name, id);
  return id;
}

bool GrammarBuilder::has_rule(const std::string& name) const { return rule_index_.count(name) > 0; }

int GrammarBuilder::fresh_rule(const std::string& stem) {
  if (!has_rule(stem)) return rule(stem);
  for (int i = 1;; ++i) {
    std::string n = fmt::format("{}_{}", stem, i);
    if (!has_rule(n)) return rule(n);
  }
}

void GrammarBuilder::define(int r, Expr body) {
  DS_CHECK(r >= 0 && r < int(rule_body_.size()), "grammar: no rule {}", r);
  DS_CHECK(rule_body_[size_t(r)] < 0, "grammar: rule '{}' is defined twice", rule_names_[size_t(r)]);
  rule_body_[size_t(r)] = body;
}

GrammarBuilder::Expr GrammarBuilder::add(Node n) {
  exprs_.push_back(std::move(n));
  return Expr(exprs_.size() - 1);
}

GrammarBuilder::Expr GrammarBuilder::empty() { return add({Op::Empty, 0, 0, {}}); }

GrammarBuilder::Expr GrammarBuilder::bytes(const ByteSet& set) {
  sets_.push_back(set);
  return add({Op::Bytes, int(sets_.size() - 1), 0, {}});
}

GrammarBuilder::Expr GrammarBuilder::byte_range(uint8_t lo, uint8_t hi) {
  ByteSet s;
  for (int c = lo; c <= hi; ++c) s.set(size_t(c));
  return bytes(s);
}

GrammarBuilder::Expr GrammarBuilder::literal(std::string_view text) {
  std::vector<Expr> items;
  for (unsigned char c : text) items.push_back(byte_range(c, c));
  return seq(std::move(items));
}

GrammarBuilder::Expr GrammarBuilder::special(const std::string& name) {
  auto it = special_index_.find(name);
  int idx;
  if (it == special_index_.end()) {
    idx = int(specials_.size());
    specials_.push_back(name);
    special_index_.emplace(name, idx);
  } else {
    idx = it->second;
  }
  return add({Op::Special, idx, 0, {}});
}

GrammarBuilder::Expr GrammarBuilder::ref(int r) { return add({Op::Ref, r, 0, {}}); }

GrammarBuilder::Expr GrammarBuilder::seq(std::vector<Expr> items) {
  if (items.size() == 1) return items[0];
  return add({Op::Seq, 0, 0, std::move(items)});
}

GrammarBuilder::Expr GrammarBuilder::alt(std::vector<Expr> items) {
  if (items.size() == 1) return items[0];
  return add({Op::Alt, 0, 0, std::move(items)});
}

GrammarBuilder::Expr GrammarBuilder::repeat(Expr e, int min, int max) {
  DS_CHECK(min >= 0 && (max < 0 || max >= min), "grammar: bad repetition {{{},{}}}", min, max);
  return add({Op::Repeat, min, max, {e}});
}

// ---------------------------------------------------------------------------------------------
// Compilation: Thompson construction per rule, then epsilon elimination.
// ---------------------------------------------------------------------------------------------

struct GrammarCompiler {
  const GrammarBuilder& b;
  struct TNode {
    std::vector<int> eps;
    std::vector<Grammar::Edge> edges;  // target: temp node
  };
  std::vector<TNode> t;
  size_t budget = 0;

  int fresh() {
    DS_CHECK(++budget < 2'000'000, "grammar: too large (repetition counts too high?)");
    t.emplace_back();
    return int(t.size() - 1);
  }
  int emit(int from, Grammar::EdgeKind k, int arg) {
    const int to = fresh();
    t[size_t(from)].edges.push_back({k, arg, to});
    return to;
  }
  int build(GrammarBuilder::Expr e, int from) {
    const GrammarBuilder::Node& n = b.exprs_[size_t(e)];
    switch (n.op) {
      case GrammarBuilder::Op::Empty: return from;
      case GrammarBuilder::Op::Bytes: return emit(from, Grammar::EdgeKind::Bytes, n.a);
      case GrammarBuilder::Op::Special: return emit(from, Grammar::EdgeKind::Special, n.a);
      case GrammarBuilder::Op::Ref: return emit(from, Grammar::EdgeKind::Ref, n.a);
      case GrammarBuilder::Op::Seq: {
        int cur = from;
        for (GrammarBuilder::Expr k : n.kids) cur = build(k, cur);
        return cur;
      }
      case GrammarBuilder::Op::Alt: {
        const int end = fresh();
        for (GrammarBuilder::Expr k : n.kids) {
          const int s = fresh();
          t[size_t(from)].eps.push_back(s);
          t[size_t(build(k, s))].eps.push_back(end);
        }
        return end;
      }
      case GrammarBuilder::Op::Repeat: {
        int cur = from;
        for (int i = 0; i < n.a; ++i) {
          const int s = fresh();
          t[size_t(cur)].eps.push_back(s);
          cur = build(n.kids[0], s);
        }
        if (n.b < 0) {
          const int s = fresh();
          t[size_t(cur)].eps.push_back(s);
          t[size_t(build(n.kids[0], s))].eps.push_back(s);
          return s;
        }
        const int end = fresh();
        t[size_t(cur)].eps.push_back(end);
        for (int i = n.a; i < n.b; ++i) {
          const int s = fresh();
          t[size_t(cur)].eps.push_back(s);
          cur = build(n.kids[0], s);
          t[size_t(cur)].eps.push_back(end);
        }
        return end;
      }
    }
    return from;
  }
};

namespace {

uint64_t fnv(std::string_view s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string set_hex(const ByteSet& s) {
  std::string out;
  for (int w = 0; w < 4; ++w) {
    uint64_t v = 0;
    for (int i = 0; i < 64; ++i)
      if (s.test(size_t(w * 64 + i))) v |= uint64_t(1) << i;
    out += fmt::format("{:x}.", v);
  }
  return out;
}

}  // namespace

std::shared_ptr<const Grammar> GrammarBuilder::build(int root) {
  DS_CHECK(root >= 0 && root < int(rule_names_.size()), "grammar: no root rule");
  auto g = std::make_shared<Grammar>();
  // Rules reachable from the root, in discovery order (root first): their ids in the grammar.
  std::vector<int> order{root};
  std::vector<int> new_id(rule_names_.size(), -1);
  new_id[size_t(root)] = 0;
  std::function<void(Expr)> scan = [&](Expr e) {
    const Node& n = exprs_[size_t(e)];
    if (n.op == Op::Ref && new_id[size_t(n.a)] < 0) {
      new_id[size_t(n.a)] = int(order.size());
      order.push_back(n.a);
    }
    for (Expr k : n.kids) scan(k);
  };
  for (size_t i = 0; i < order.size(); ++i) {
    const int r = order[i];
    DS_CHECK(rule_body_[size_t(r)] >= 0, "grammar: rule '{}' is used but not defined", rule_names_[size_t(r)]);
    scan(rule_body_[size_t(r)]);
  }
  g->root_ = 0;
  g->byte_sets_ = sets_;
  g->specials_ = specials_;
  std::map<std::string, int> set_by_content;
  auto set_index = [&](const ByteSet& s) {
    std::string key = set_hex(s);
    auto it = set_by_content.find(key);
    if (it != set_by_content.end()) return it->second;
    g->byte_sets_.push_back(s);
    const int idx = int(g->byte_sets_.size() - 1);
    set_by_content.emplace(std::move(key), idx);
    return idx;
  };
  for (const int r : order) {
    GrammarCompiler c{*this, {}, 0};
    const int start = c.fresh();
    const int end = c.build(rule_body_[size_t(r)], start);
    // Kept nodes: the start and every target of a consuming edge.
    std::vector<int> local(c.t.size(), -1);
    std::vector<int> kept{start};
    local[size_t(start)] = 0;
    for (size_t i = 0; i < c.t.size(); ++i)
      for (const Grammar::Edge& e : c.t[i].edges)
        if (local[size_t(e.target)] < 0) {
          local[size_t(e.target)] = int(kept.size());
          kept.push_back(e.target);
        }
    const int base = int(g->nodes_.size());
    g->rule_start_.push_back(base);
    g->rule_names_.push_back(rule_names_[size_t(r)]);
    std::vector<int> seen(c.t.size(), -1);
    for (size_t k = 0; k < kept.size(); ++k) {
      Grammar::Node node;
      node.rule = int(g->rule_start_.size() - 1);
      std::vector<int> stack{kept[k]};
      seen[size_t(kept[k])] = int(k);
      std::vector<Grammar::Edge> edges;
      while (!stack.empty()) {
        const int x = stack.back();
        stack.pop_back();
        if (x == end) node.final = true;
        for (const Grammar::Edge& e : c.t[size_t(x)].edges) {
          Grammar::Edge ne = e;
          ne.target = base + local[size_t(e.target)];
          if (ne.kind == Grammar::EdgeKind::Ref) ne.arg = new_id[size_t(ne.arg)];
          edges.push_back(ne);
        }
        for (int y : c.t[size_t(x)].eps)
          if (seen[size_t(y)] != int(k)) {
            seen[size_t(y)] = int(k);
            stack.push_back(y);
          }
      }
      // Merge byte edges with the same target; drop duplicates.
      std::vector<Grammar::Edge> out;
      std::map<int, ByteSet> by_target;
      std::vector<int> target_order;
      for (const Grammar::Edge& e : edges) {
        if (e.kind == Grammar::EdgeKind::Bytes) {
          if (!by_target.count(e.target)) target_order.push_back(e.target);
          by_target[e.target] |= sets_[size_t(e.arg)];
          continue;
        }
        bool dup = false;
        for (const Grammar::Edge& o : out) dup |= o.kind == e.kind && o.arg == e.arg && o.target == e.target;
        if (!dup) out.push_back(e);
      }
      for (int tg : target_order) {
        const ByteSet& s = by_target[tg];
        if (s.none()) continue;
        out.push_back({Grammar::EdgeKind::Bytes, set_index(s), tg});
        node.first |= s;
      }
      node.edge_begin = uint32_t(g->edges_.size());
      for (const Grammar::Edge& e : out) {
        node.scans |= e.kind != Grammar::EdgeKind::Ref;
        g->edges_.push_back(e);
      }
      node.edge_end = uint32_t(g->edges_.size());
      g->nodes_.push_back(node);
    }
  }

  // Left recursion: a rule that can reach a call of itself without consuming anything.
  const int nr = g->num_rules();
  std::vector<int> rule_end(static_cast<size_t>(nr));
  for (int r = 0; r < nr; ++r) rule_end[size_t(r)] = r + 1 < nr ? g->rule_start_[size_t(r + 1)] : g->num_nodes();
  std::vector<char> nullable(size_t(nr), 0);
  // Nodes of rule r reachable from its start through nullable calls only.
  auto null_reach = [&](int r, std::vector<int>* calls) {
    std::vector<char> vis(size_t(rule_end[size_t(r)] - g->rule_start_[size_t(r)]), 0);
    std::vector<int> st{g->rule_start_[size_t(r)]};
    vis[0] = 1;
    bool fin = false;
    while (!st.empty()) {
      const int n = st.back();
      st.pop_back();
      fin |= g->nodes_[size_t(n)].final;
      for (const Grammar::Edge* e = g->edges_begin(n); e != g->edges_end(n); ++e) {
        if (e->kind != Grammar::EdgeKind::Ref) continue;
        if (calls) calls->push_back(e->arg);
        if (!nullable[size_t(e->arg)]) continue;
        const int li = e->target - g->rule_start_[size_t(r)];
        if (!vis[size_t(li)]) {
          vis[size_t(li)] = 1;
          st.push_back(e->target);
        }
      }
    }
    return fin;
  };
  for (bool changed = true; changed;) {
    changed = false;
    for (int r = 0; r < nr; ++r)
      if (!nullable[size_t(r)] && null_reach(r, nullptr)) nullable[size_t(r)] = changed = true;
  }
  std::vector<std::vector<int>> left(static_cast<size_t>(nr));
  for (int r = 0; r < nr; ++r) null_reach(r, &left[size_t(r)]);
  std::vector<int> color(static_cast<size_t>(nr), 0);
  std::function<void(int)> dfs = [&](int r) {
    color[size_t(r)] = 1;
    for (int s : left[size_t(r)]) {
      if (color[size_t(s)] == 1) fail("grammar: rule '{}' is left-recursive", g->rule_names_[size_t(s)]);
      if (color[size_t(s)] == 0) dfs(s);
    }
    color[size_t(r)] = 2;
  };
  for (int r = 0; r < nr; ++r)
    if (color[size_t(r)] == 0) dfs(r);

  // Signatures: each rule's automaton with those of the rules it reaches, in discovery order.
  std::vector<std::string> own(static_cast<size_t>(nr));
  for (int r = 0; r < nr; ++r) {
    std::string s;
    const int b0 = g->rule_start_[size_t(r)];
    for (int n = b0; n < rule_end[size_t(r)]; ++n) {
      s += g->nodes_[size_t(n)].final ? "F" : "N";
      for (const Grammar::Edge* e = g->edges_begin(n); e != g->edges_end(n); ++e) {
        const int tg = e->target - b0;
        switch (e->kind) {
          case Grammar::EdgeKind::Bytes: s += fmt::format("b{}>{};", set_hex(g->byte_sets_[size_t(e->arg)]), tg); break;
          case Grammar::EdgeKind::Special: {  // in hex: a name may hold "r@", which the renumbering below reads
            s += 's';
            for (unsigned char c : g->specials_[size_t(e->arg)]) s += fmt::format("{:02x}", c);
            s += fmt::format(">{};", tg);
            break;
          }
          case Grammar::EdgeKind::Ref: s += fmt::format("r@{}>{};", e->arg, tg); break;  // renumbered below
        }
      }
      s += "|";
    }
    own[size_t(r)] = std::move(s);
  }
  g->rule_sig_.resize(size_t(nr));
  for (int r = 0; r < nr; ++r) {
    std::vector<int> ord{r};
    std::map<int, int> idx{{r, 0}};
    std::string text;
    for (size_t i = 0; i < ord.size(); ++i) {
      const int q = ord[i];
      std::string s = own[size_t(q)];
      // Replace global rule ids by discovery indices.
      std::string out;
      for (size_t p = 0; p < s.size();) {
        if (s.compare(p, 2, "r@") == 0) {
          size_t e = p + 2;
          int id = 0;
          while (e < s.size() && s[e] >= '0' && s[e] <= '9') id = id * 10 + (s[e++] - '0');
          auto it = idx.find(id);
          if (it == idx.end()) {
            it = idx.emplace(id, int(ord.size())).first;
            ord.push_back(id);
          }
          out += fmt::format("r{}", it->second);
          p = e;
        } else {
          out += s[p++];
        }
      }
      text += out + "#";
    }
    g->rule_sig_[size_t(r)] = fmt::format("{:016x}{:016x}{:x}", fnv(text, 1469598103934665603ull),
                                          fnv(text, 0x9e3779b97f4a7c15ull), text.size());
  }
  g->node_sig_.resize(g->nodes_.size());
  for (int n = 0; n < g->num_nodes(); ++n) {
    const int r = g->nodes_[size_t(n)].rule;
    g->node_sig_[size_t(n)] = fmt::format("{}@{}", g->rule_sig_[size_t(r)], n - g->rule_start_[size_t(r)]);
  }
  return g;
}

const std::string& Grammar::signature(int n) const { return node_sig_[size_t(n)]; }

std::string Grammar::dump() const {
  std::string out;
  for (int r = 0; r < num_rules(); ++r) {
    out += fmt::format("rule {} '{}' start {}\n", r, rule_names_[size_t(r)], rule_start_[size_t(r)]);
  }
  for (int n = 0; n < num_nodes(); ++n) {
    out += fmt::format("  {}{}:", n, nodes_[size_t(n)].final ? "*" : "");
    for (const Edge* e = edges_begin(n); e != edges_end(n); ++e) {
      if (e->kind == EdgeKind::Ref) out += fmt::format(" call {}->{}", rule_names_[size_t(e->arg)], e->target);
      else if (e->kind == EdgeKind::Special) out += fmt::format(" {}->{}", specials_[size_t(e->arg)], e->target);
      else out += fmt::format(" [{} bytes]->{}", byte_sets_[size_t(e->arg)].count(), e->target);
    }
    out += "\n";
  }
  return out;
}

}  // namespace ds
