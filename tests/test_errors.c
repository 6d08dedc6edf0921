#include "test.h"
const dg_test error_tests[] = {{NULL, NULL}};
