// Registers every attnfast op schema (the tables of csrc/schemas.h) in the `attnfast` library.
#include <torch/library.h>

#include "schemas.h"

TORCH_LIBRARY(attnfast, m) { attnfast::schemas::define_all(m); }
