/* server.c - placeholder until the module lands. */
#include "config.h"
#include "lambdagate/server.h"
