// A shared library opened at run time (dlopen) whose code stays mapped for the rest of the process.
//
// Libraries loaded this way may start threads of their own (NCCL's ncclGetUniqueId starts the bootstrap root
// thread, its communicators proxy threads) that outlive the call which loaded them. Unloading such a library
// when its last handle closes unmaps code those threads still run: the process dies with a segmentation
// fault. So a SharedLibrary is opened with RTLD_NODELETE: closing it releases the handle, never the code
// (docs/PARALLEL.md). Used by cuda/nccl_comm.cpp; CPU-built so its behaviour is tested in CI
// (tests/core/test_shared_library.cpp).
#pragma once
#include <string>

namespace ds {

class SharedLibrary {
 public:
  // Opens `file` (a path, or a name the dynamic loader searches for). A failure is not thrown: ok() is false
  // and error() says why, so a caller can report "NCCL not available" without an exception.
  explicit SharedLibrary(const std::string& file);
  ~SharedLibrary();
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;

  bool ok() const { return handle_ != nullptr; }
  const std::string& error() const { return error_; }
  const std::string& file() const { return file_; }

  // The address of symbol `name`, or null (and error() names the symbol when no earlier error was kept).
  void* symbol(const char* name);
  // Sets `fn` to the function named `name` (a typed form of symbol()).
  template <typename Fn>
  bool bind(Fn*& fn, const char* name) {
    fn = reinterpret_cast<Fn*>(symbol(name));
    return fn != nullptr;
  }

  // Whether `file` is mapped in this process now (dlopen with RTLD_NOLOAD; loads nothing).
  static bool is_loaded(const std::string& file);

 private:
  std::string file_, error_;
  void* handle_ = nullptr;
};

}  // namespace ds
