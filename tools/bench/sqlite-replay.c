// The SQLite cost of one `hello` run, without flowd: the store's statements for a run, replayed
// in C against the store's schema (SQLiteSchema v3 as of this commit; keep them in step), B runs
// per BEGIN IMMEDIATE ... COMMIT, WAL, synchronous=FULL. Prints the CPU per run and its split by
// phase (submit, claim, run_started, append of 4 node events, finish, commit).
//
//   cc -O2 -o /tmp/sqlite-replay tools/bench/sqlite-replay.c -lsqlite3
//   (cd "$(mktemp -d)" && /tmp/sqlite-replay 20000 50 mM)     N runs, B per transaction, options
//
// Options (letters, combined): m memory statistics off (as flowd sets them), M the append's
// events in one multi-row INSERT (as flowd does), f foreign keys off, r run_events as a rowid
// table, w runs WITHOUT ROWID, t without runs_by_tenant, x without runs_by_state, c a 64 MiB
// page cache, s synchronous=OFF. It writes b.db in the current directory.
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
static sqlite3 *db;
static void ck(int rc, const char *what){ if(rc!=SQLITE_OK && rc!=SQLITE_DONE && rc!=SQLITE_ROW){fprintf(stderr,"%s: %d %s\n",what,rc,sqlite3_errmsg(db));exit(1);} }
static sqlite3_stmt *P(const char *sql){ sqlite3_stmt *s; ck(sqlite3_prepare_v3(db,sql,-1,SQLITE_PREPARE_PERSISTENT,&s,0),sql); return s; }
static void run(sqlite3_stmt *s){ int rc; while((rc=sqlite3_step(s))==SQLITE_ROW){} ck(rc,sqlite3_sql(s)); sqlite3_reset(s); sqlite3_clear_bindings(s);}
static double cpu(){ struct rusage r; getrusage(RUSAGE_SELF,&r); return r.ru_utime.tv_sec+r.ru_utime.tv_usec/1e6+r.ru_stime.tv_sec+r.ru_stime.tv_usec/1e6; }
static double tc(){ struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+t.tv_nsec/1e9; }
static double ph[8];
static double now(){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec/1e9; }
int main(int argc,char**argv){
  int N=atoi(argv[1]), B=atoi(argv[2]); const char *opts=argc>3?argv[3]:"";
  int cache=!!strchr(opts,'c'), wr=!!strchr(opts,'w'), notix=!!strchr(opts,'t'), nosix=!!strchr(opts,'x');
  int fk=!strchr(opts,'f'), memstat=!strchr(opts,'m'), multi=!!strchr(opts,'M'), rowid=!!strchr(opts,'r'), sync=!strchr(opts,'s');
  if(!memstat) sqlite3_config(SQLITE_CONFIG_MEMSTATUS,0);
  remove("b.db"); remove("b.db-wal"); remove("b.db-shm");
  ck(sqlite3_open_v2("b.db",&db,SQLITE_OPEN_READWRITE|SQLITE_OPEN_CREATE|SQLITE_OPEN_NOMUTEX,0),"open");
  char *e=0;
  const char *schema =
   "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
   "CREATE TABLE runs (id TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL, workflow TEXT NOT NULL, workflow_version TEXT NOT NULL, state TEXT NOT NULL, inputs_json TEXT NOT NULL, outputs_json TEXT, error TEXT, trigger TEXT NOT NULL, transport TEXT NOT NULL, user TEXT NOT NULL, idempotency_key TEXT, created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, attempt INTEGER NOT NULL DEFAULT 0, last_sequence INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0, total_tokens INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires_at INTEGER, last_progress_at INTEGER, stop_requested INTEGER NOT NULL DEFAULT 0) STRICT%s;"
         "CREATE TABLE idempotency (tenant TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, run_id TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (tenant, key)) STRICT, WITHOUT ROWID;"
   "CREATE INDEX idempotency_by_expiry ON idempotency(expires_at);"
   "CREATE TABLE tenant_limits (tenant TEXT PRIMARY KEY NOT NULL, max_active INTEGER NOT NULL) STRICT;"
   "CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT; INSERT INTO counters VALUES ('claims',0);"
   "CREATE TABLE tenants (tenant TEXT PRIMARY KEY NOT NULL, active INTEGER NOT NULL DEFAULT 0, scheduled INTEGER NOT NULL DEFAULT 0, last_claim INTEGER NOT NULL DEFAULT 0) STRICT, WITHOUT ROWID; INSERT INTO tenants VALUES ('bench',0,0,0);";
  char sch[8192]; snprintf(sch,sizeof sch,schema,wr?", WITHOUT ROWID":""); ck(sqlite3_exec(db,sch,0,0,&e),e?e:"schema");
  if(!notix) ck(sqlite3_exec(db,"CREATE INDEX runs_by_tenant ON runs(tenant, created_at DESC, id DESC)",0,0,&e),"ix");
  if(!nosix) ck(sqlite3_exec(db,"CREATE INDEX runs_by_state ON runs(state, tenant, created_at, id)",0,0,&e),"ix");
  if(cache) ck(sqlite3_exec(db,"PRAGMA cache_size=-65536",0,0,&e),"cache");
  ck(sqlite3_exec(db, rowid ? "CREATE TABLE run_events (run_id TEXT NOT NULL REFERENCES runs(id), sequence INTEGER NOT NULL, time INTEGER NOT NULL, kind TEXT NOT NULL, payload_json TEXT NOT NULL, PRIMARY KEY (run_id, sequence)) STRICT;"
     : "CREATE TABLE run_events (run_id TEXT NOT NULL REFERENCES runs(id), sequence INTEGER NOT NULL, time INTEGER NOT NULL, kind TEXT NOT NULL, payload_json TEXT NOT NULL, PRIMARY KEY (run_id, sequence)) STRICT, WITHOUT ROWID;",0,0,&e),"ev");
  ck(sqlite3_exec(db, sync?"PRAGMA synchronous=FULL":"PRAGMA synchronous=OFF",0,0,&e),"sync");
  ck(sqlite3_exec(db, fk?"PRAGMA foreign_keys=ON":"PRAGMA foreign_keys=OFF",0,0,&e),"fk");
  sqlite3_stmt *idem=P("INSERT INTO idempotency (tenant, key, fingerprint, run_id, expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, key) DO NOTHING");
  sqlite3_stmt *adm=P("UPDATE tenants SET active = active + 1, scheduled = scheduled + 1 WHERE tenant = ?1 AND active < COALESCE((SELECT max_active FROM tenant_limits WHERE tenant = ?1), ?2)");
  sqlite3_stmt *ins=P("INSERT INTO runs (id, tenant, workflow, workflow_version, state, inputs_json, trigger, transport, user, idempotency_key, created_at) VALUES (?, 'bench', 'hello', '1', 'scheduled', '{\"name\":\"Ada\"}', 'api-async', 'grpc', '', ?, ?)");
  sqlite3_stmt *cand=P("SELECT t.tenant FROM tenants t WHERE t.scheduled > 0 ORDER BY t.last_claim, (SELECT MIN(r.created_at) FROM runs r WHERE r.state = 'scheduled' AND r.tenant = t.tenant), t.tenant LIMIT 1");
  sqlite3_stmt *ctr=P("UPDATE counters SET value = value + ? WHERE name = 'claims'");
  sqlite3_stmt *ctrsel=P("SELECT value FROM counters WHERE name = 'claims'");
  sqlite3_stmt *cl=P("UPDATE runs SET state = 'running', attempt = attempt + 1, started_at = ?, lease_owner = 'w', lease_expires_at = ?, last_progress_at = ?, last_sequence = last_sequence + 1 WHERE id IN (SELECT id FROM runs WHERE state = 'scheduled' AND tenant = 'bench' ORDER BY created_at, id LIMIT ?)");
  sqlite3_stmt *schedsel=P("SELECT * FROM runs WHERE state = 'scheduled' AND tenant = 'bench' ORDER BY created_at, id LIMIT ?");
  sqlite3_stmt *tcl=P("UPDATE tenants SET last_claim = ?, scheduled = scheduled - ? WHERE tenant = 'bench'");
  sqlite3_stmt *ev=P("INSERT INTO run_events (run_id, sequence, time, kind, payload_json) VALUES (?, ?, ?, ?, ?)");
  sqlite3_stmt *ev4=P("INSERT INTO run_events (run_id, sequence, time, kind, payload_json) VALUES (?1, 2, ?2, 'node_started', ?3), (?1, 3, ?2, 'node_finished', ?4), (?1, 4, ?2, 'node_started', ?3), (?1, 5, ?2, 'node_finished', ?4)");
  sqlite3_stmt *app=P("UPDATE runs SET last_sequence = last_sequence + ?, last_progress_at = ?, total_steps = total_steps + ? WHERE id = ? AND attempt = ? AND state = 'running'");
  sqlite3_stmt *fin=P("UPDATE runs SET state = ?1, finished_at = ?2, outputs_json = ?3, error = ?4, lease_owner = NULL, lease_expires_at = NULL, last_sequence = last_sequence + 1 WHERE id = ?5 AND attempt = ?6 AND state = ?7 AND (?8 IS NULL OR last_sequence = ?8)");
  sqlite3_stmt *sel=P("SELECT * FROM runs WHERE id = ?"); sqlite3_stmt *sls=P("SELECT last_sequence FROM runs WHERE id = ?");
  sqlite3_stmt *tfin=P("UPDATE tenants SET active = active - 1, scheduled = scheduled - 0 WHERE tenant = 'bench'");
  char runpay[481]; memset(runpay,'r',480); runpay[480]=0;
  char ns[262]; memset(ns,'s',261); ns[261]=0; char nf[281]; memset(nf,'f',280); nf[280]=0;
  char ids[B][48], keys[B][24];
  double c0=cpu(), t0=now(); long long ms=1796308788696LL;
  for(int b=0;b<N/B;b++){
    double x=tc(); ck(sqlite3_exec(db,"BEGIN IMMEDIATE",0,0,0),"begin");
    for(int i=0;i<B;i++){ long long r=(long long)b*B+i; ms++;
      snprintf(ids[i],sizeof ids[i],"%012llx-7000-8000-%012llx",ms,(long long)rand()); snprintf(keys[i],sizeof keys[i],"k%lld",r);
      sqlite3_bind_text(idem,1,"bench",-1,SQLITE_TRANSIENT); sqlite3_bind_text(idem,2,keys[i],-1,SQLITE_TRANSIENT); sqlite3_bind_text(idem,3,"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",-1,SQLITE_TRANSIENT); sqlite3_bind_text(idem,4,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(idem,5,ms+86400000); {double y=tc(); run(idem); ph[6]+=tc()-y;}
      sqlite3_bind_text(adm,1,"bench",-1,SQLITE_TRANSIENT); sqlite3_bind_int64(adm,2,1000000000); {double y=tc(); run(adm); ph[7]+=tc()-y;}
      sqlite3_bind_text(ins,1,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_text(ins,2,keys[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(ins,3,ms); run(ins); 
    }
    ph[0]+=tc()-x; x=tc(); run(cand); sqlite3_bind_int64(ctr,1,B); run(ctr); run(ctrsel);
    sqlite3_bind_int64(cl,1,ms); sqlite3_bind_int64(cl,2,ms+30000); sqlite3_bind_int64(cl,3,ms); sqlite3_bind_int64(cl,4,B); sqlite3_bind_int64(schedsel,1,B); run(schedsel); run(cl);
    sqlite3_bind_int64(tcl,1,b); sqlite3_bind_int64(tcl,2,B); run(tcl);
    ph[1]+=tc()-x; x=tc(); for(int i=0;i<B;i++){ sqlite3_bind_text(ev,1,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(ev,2,1); sqlite3_bind_int64(ev,3,ms); sqlite3_bind_text(ev,4,"run_started",-1,SQLITE_TRANSIENT); sqlite3_bind_text(ev,5,runpay,-1,SQLITE_TRANSIENT); run(ev);}
    ph[2]+=tc()-x; x=tc(); for(int i=0;i<B;i++){
      sqlite3_bind_int64(app,1,4); sqlite3_bind_int64(app,2,ms); sqlite3_bind_int64(app,3,2); sqlite3_bind_text(app,4,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(app,5,1); run(app); sqlite3_bind_text(sls,1,ids[i],-1,SQLITE_TRANSIENT); run(sls);
      if(multi){ sqlite3_bind_text(ev4,1,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(ev4,2,ms); sqlite3_bind_text(ev4,3,ns,-1,SQLITE_TRANSIENT); sqlite3_bind_text(ev4,4,nf,-1,SQLITE_TRANSIENT); run(ev4);}
      else for(int k=2;k<=5;k++){ sqlite3_bind_text(ev,1,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(ev,2,k); sqlite3_bind_int64(ev,3,ms); sqlite3_bind_text(ev,4,k%2?"node_finished":"node_started",-1,SQLITE_TRANSIENT); sqlite3_bind_text(ev,5,k%2?nf:ns,-1,SQLITE_TRANSIENT); run(ev);}
    }
    ph[3]+=tc()-x; x=tc(); for(int i=0;i<B;i++){
      sqlite3_bind_text(fin,1,"succeeded",-1,SQLITE_TRANSIENT); sqlite3_bind_int64(fin,2,ms); sqlite3_bind_text(fin,3,"{\"greeting\":\"Hello, Ada!\"}",-1,SQLITE_TRANSIENT); sqlite3_bind_null(fin,4); sqlite3_bind_text(fin,5,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(fin,6,1); sqlite3_bind_text(fin,7,"running",-1,SQLITE_TRANSIENT); sqlite3_bind_int64(fin,8,5); run(fin); sqlite3_bind_text(sel,1,ids[i],-1,SQLITE_TRANSIENT); run(sel);
      run(tfin);
      sqlite3_bind_text(ev,1,ids[i],-1,SQLITE_TRANSIENT); sqlite3_bind_int64(ev,2,6); sqlite3_bind_int64(ev,3,ms); sqlite3_bind_text(ev,4,"run_finished",-1,SQLITE_TRANSIENT); sqlite3_bind_text(ev,5,runpay,-1,SQLITE_TRANSIENT); run(ev);
    }
    ph[4]+=tc()-x; x=tc(); ck(sqlite3_exec(db,"COMMIT",0,0,0),"commit"); ph[5]+=tc()-x;
  }
  double c1=cpu(), t1=now();
  sqlite3_int64 cnt=0; sqlite3_stmt *q=P("SELECT count(*) FROM run_events"); if(sqlite3_step(q)==SQLITE_ROW) cnt=sqlite3_column_int64(q,0); sqlite3_reset(q);
  printf("%-6s N=%d B=%d: CPU %.1f us/run, wall %.1f us/run, events %lld\n", opts, N, B, (c1-c0)/N*1e6, (t1-t0)/N*1e6, cnt);
  printf("   idem %.1f adm %.1f |", ph[6]/N*1e6, ph[7]/N*1e6); printf("   submit %.1f claim %.1f started-ev %.1f append %.1f finish %.1f commit %.1f us/run\n", ph[0]/N*1e6, ph[1]/N*1e6, ph[2]/N*1e6, ph[3]/N*1e6, ph[4]/N*1e6, ph[5]/N*1e6);
  return 0;
}
