// Error categories shared across layers live next to their enums; this file
// anchors the common library so that it always has one object file.
namespace mailroom {
const char* project_name() {
  return "mailroom";
}
}  // namespace mailroom
