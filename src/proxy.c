/* proxy.c - placeholder until the module lands. */
#include "config.h"
#include "lambdagate/proxy.h"
