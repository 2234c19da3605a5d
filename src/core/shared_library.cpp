#include "core/shared_library.h"

#include <dlfcn.h>

namespace ds {

SharedLibrary::SharedLibrary(const std::string& file) : file_(file) {
  handle_ = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (!handle_) {
    const char* e = dlerror();
    error_ = e ? e : "unknown error";
  }
}

SharedLibrary::~SharedLibrary() {
  if (handle_) dlclose(handle_);  // the reference only: RTLD_NODELETE keeps the code mapped
}

void* SharedLibrary::symbol(const char* name) {
  if (!handle_) return nullptr;
  dlerror();  // clear a stale error
  void* p = dlsym(handle_, name);
  if (!p && error_.empty()) error_ = file_ + " has no symbol " + name;
  return p;
}

bool SharedLibrary::is_loaded(const std::string& file) {
  void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!h) return false;
  dlclose(h);  // the reference RTLD_NOLOAD took
  return true;
}

}  // namespace ds
