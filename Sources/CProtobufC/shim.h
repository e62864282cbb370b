#ifndef FLOWD_CPROTOBUFC_SHIM_H
#define FLOWD_CPROTOBUFC_SHIM_H
#include <protobuf-c/protobuf-c.h>
#endif
