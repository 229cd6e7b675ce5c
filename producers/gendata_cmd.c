/* gendata_cmd.c -- `she gen-data`: write a seeded synthetic query log with step ground truth
 * as JSON Lines (core/gendata.h has the rules; core/reader.h reads the output back). */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "commands.h"
#include "dataset.h"
#include "gendata.h"
#include "reader.h"

static const she_conf_def_t gendata_defs[] = {
    {"gen.samples", SHE_CONF_INT, "1000", "number of samples (query-item rows)", 0, 1e9, NULL,
     "n"},
    {"gen.seed", SHE_CONF_INT, "1", "random seed; the same seed gives byte-identical output", 0,
     9007199254740991.0, NULL, "seed"},
    {"gen.out", SHE_CONF_STR, "-", "output JSON Lines file ('-' = stdout)", 0, 0, NULL, "out"},
    {"gen.noise", SHE_CONF_DOUBLE, "0",
     "probability a grade is replaced by another (annotator disagreement; steps stay clean)", 0,
     1, NULL, "noise"},
    {"gen.items.per.query", SHE_CONF_INT, "8", "rows (items) per query", 1, 1000, NULL,
     "items-per-query"},
    {"gen.query.mix", SHE_CONF_STR,
     "plain=0.5,qa=0.12,alternative=0.12,negation=0.13,knowledge=0.13",
     "relative weights of the query types", 0, 0, NULL, "mix"},
    {"gen.grade.mix", SHE_CONF_STR, "L1=0.10,L2=0.30,L3=0.36,L4=0.24",
     "relative target weights of the grades", 0, 0, NULL, "grade-mix"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

typedef struct sink {
    FILE *f;
    long long n, grades[5];
} sink_t;

static she_err_t write_sample(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    sink_t *k = opaque;
    k->n++;
    k->grades[s->grade]++;
    return she_sample_write_jsonl(k->f, s, errstr, errstr_size);
}

int she_cmd_gen_data(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp, "she gen-data [--n N] [--seed S] [--out FILE] [options]",
        "Writes a synthetic search log as JSON Lines: queries of five types (plain, qa,\n"
        "alternative, negation, knowledge) over a catalogue of 51 leaf categories in 7\n"
        "domains, each row with a grade L1..L4 and the full chain-of-thought ground truth\n"
        "(query and item category and attributes, category and attribute match).  Grades\n"
        "follow from the matches (see core/gendata.h).  Read it back with the readers'\n"
        "default jsonl mapping.",
        gendata_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_conf_t *conf = env.conf;
    she_log_t *lg = env.lg;
    char errstr[SHE_ERRSTR_SIZE];
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = she_conf_get_int(conf, "gen.samples");
    o.seed = (uint64_t)she_conf_get_int(conf, "gen.seed");
    o.noise = she_conf_get_double(conf, "gen.noise");
    o.items_per_query = (int)she_conf_get_int(conf, "gen.items.per.query");
    if (she_gendata_parse_type_mix(&o, she_conf_get(conf, "gen.query.mix"), errstr,
                                   sizeof(errstr)) != SHE_OK ||
        she_gendata_parse_grade_mix(&o, she_conf_get(conf, "gen.grade.mix"), errstr,
                                    sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "she gen-data: %s\n", errstr);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }

    she_outfile_t of;
    she_err_t err = she_outfile_open(&of, she_conf_get(conf, "gen.out"), errstr, sizeof(errstr));
    sink_t sink = {.f = of.f};
    if (err == SHE_OK) {
        err = she_gendata_run(&o, write_sample, &sink, errstr, sizeof(errstr));
        she_err_t cerr = she_outfile_close(&of, err == SHE_OK, errstr, sizeof(errstr));
        if (err == SHE_OK)
            err = cerr;
    }
    if (err != SHE_OK) {
        she_log_error(lg, "%s", errstr);
        she_cmd_fini(&env);
        return SHE_EXIT_FAILURE;
    }
    she_log_info(lg, "wrote %lld samples to %s (seed %llu, noise %g): L1 %lld, L2 %lld, L3 %lld, "
                 "L4 %lld",
                 sink.n, of.is_stdout ? "stdout" : of.path, (unsigned long long)o.seed, o.noise,
                 sink.grades[1], sink.grades[2], sink.grades[3], sink.grades[4]);
    she_cmd_fini(&env);
    return SHE_EXIT_OK;
}
