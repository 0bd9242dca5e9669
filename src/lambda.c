/* lambda.c - placeholder until the module lands. */
#include "config.h"
#include "lambdagate/lambda.h"
