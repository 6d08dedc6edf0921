#include "test.h"
const dg_test unit_tests[] = {{NULL, NULL}};
