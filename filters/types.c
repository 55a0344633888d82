/* types.c - the table of filter types: which flt_ops a [filter:NAME]
 * section's type = names, and which keys each type takes. conf.c finds a
 * type's keys and parse hooks here; the chain can find init, run and
 * deinit the same way.
 */
#include <string.h>
#include <strings.h>

#include "filter.h"

static const struct flt_ops *const types[] = {
  [PX_FLT_CLAMAV] = &flt_clamav_ops,
  [PX_FLT_CLAMD] = &flt_clamd_ops,
  [PX_FLT_COMMAND] = &flt_command_ops,
  [PX_FLT_HEADER] = &flt_header_ops,
};
_Static_assert(sizeof types / sizeof *types == PX_FLT_COUNT,
               "filter types out of sync");

const struct flt_ops *flt_ops_of(enum px_filter_type t)
{
  return (unsigned)t < PX_FLT_COUNT ? types[t] : NULL;
}

const struct flt_ops *flt_ops_by_name(const char *type)
{
  int i;

  for (i = 0; i < PX_FLT_COUNT; i++)
    if (strcasecmp(type, px_filter_type_names[types[i]->type]) == 0)
      return types[i];
  return NULL;
}

const struct flt_key *flt_key_of(const struct flt_ops *ops, const char *name)
{
  const struct flt_key *k;

  for (k = ops->keys; k != NULL && k->name != NULL; k++)
    if (strcmp(k->name, name) == 0)
      return k;
  return NULL;
}
