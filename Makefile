# The local stack and the tests. See README.md.
.PHONY: up down test unit token invoke demo check lambda validate sweep reconcile revoke unrevoke revocations migrate mirror restore redrive import-legacy soak chaos sam-local sam-test
up:      ## bring the whole stack up locally and show it working
	scripts/up
test:    ## run every test (starts the stack if needed)
	scripts/test
unit:    ## the fast lane: every test that needs no stack (well under a minute once built)
	scripts/unit
down:    ## stop the stack
	scripts/down
demo:    ## upload and download a file through the running stack
	python3 scripts/demo.py
token:   ## mint a token: make token SUB=u1 SCOPE="upload download" DECKS=d1,d2
	@scripts/token "$(or $(SUB),local-user)" "$(or $(SCOPE),upload download)" "$(DECKS)"
invoke:  ## run a non-HTTP function now: make invoke FN=process-upload EVENT=events/process-upload.json
	scripts/invoke "$(FN)" $(EVENT)
sam-local: ## the API from template.yaml's functions under `sam local start-api` (Docker), against the stack
	scripts/sam-local
sam-test: ## upload, process, reference, download, sweep and mirror one file through `sam local`
	scripts/sam-test
check:   ## formatting and lints, as CI runs them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
lambda:  ## build the deployable arm64 artifacts
	. scripts/lib.sh && "$$TOOLS_VENV/bin/sam" validate --lint && scripts/build-lambdas
validate: ## sam validate --lint, cfn-lint (informational rules too) and checkov on the template, as CI runs them
	scripts/validate-template
sweep:   ## sweep orphans now: make sweep GRACE=0
	@echo '{"mode": "sweep", "grace_seconds": $(or $(GRACE),86400)}' > .local/sweep.json && scripts/invoke sweep-orphans .local/sweep.json
reconcile: ## recompute reference counts: make reconcile FIX=true
	@echo '{"mode": "reconcile", "fix": $(or $(FIX),false)}' > .local/reconcile.json && scripts/invoke sweep-orphans .local/reconcile.json
revoke:  ## refuse a user's tokens within a minute: make revoke SUB=u123 [BEFORE=<unix seconds>: only tokens issued before]
	@test -n "$(SUB)" || { echo "usage: make revoke SUB=<sub> [BEFORE=<unix seconds>]"; exit 1; }
	@python3 -c 'import json,sys; c={"mode":"revoke","sub":sys.argv[1]}; sys.argv[2] and c.update(issued_before=int(sys.argv[2])); print(json.dumps(c))' "$(SUB)" "$(BEFORE)" > .local/revoke.json && scripts/invoke sweep-orphans .local/revoke.json
unrevoke: ## let a revoked user back in: make unrevoke SUB=u123
	@test -n "$(SUB)" || { echo "usage: make unrevoke SUB=<sub>"; exit 1; }
	@python3 -c 'import json,sys; print(json.dumps({"mode":"unrevoke","sub":sys.argv[1]}))' "$(SUB)" > .local/unrevoke.json && scripts/invoke sweep-orphans .local/unrevoke.json
revocations: ## list the deny-list
	@echo '{"mode": "revocations"}' > .local/revocations.json && scripts/invoke sweep-orphans .local/revocations.json
migrate: ## apply the Postgres migrations: make migrate [DATABASE_URL=postgres://…] (default: the stack's)
	scripts/migrate
mirror:  ## compare Postgres with DynamoDB (repair, or backfill): make mirror FIX=true [DATABASE_URL=…]
	@echo '{"mode": "reconcile", "fix": $(or $(FIX),false)}' > .local/mirror.json && scripts/invoke sync-postgres .local/mirror.json
restore: ## bring back a deleted media object and thumbnail: make restore HASH=<sha256> [STACK=<name>] [RECORD_FROM=<table>]
	@scripts/restore "$(HASH)" $(if $(STACK),--stack "$(STACK)") $(if $(RECORD_FROM),--record-from "$(RECORD_FROM)")
redrive: ## on AWS, replay a failure queue: make redrive QUEUE=ProcessUploadFailures|ScheduleFailures|SyncPostgresFailures STACK=<name> [DRY_RUN=1]
	@scripts/redrive "$(QUEUE)" --stack "$(or $(STACK),ankicollab-media)" $(if $(DRY_RUN),--dry-run)
import-legacy: ## import AnkiCollab's media: make import-legacy SOURCE_DATABASE_URL=… SOURCE_BUCKET=… [SOURCE_ENDPOINT=…] [SOURCE_REGION=…]
	scripts/import-legacy
chaos:   ## a workload while DynamoDB and S3 fail, then every invariant: make chaos MINUTES=10 RATE=0.25 SEEDS="1 2"
	MINUTES=$(or $(MINUTES),1) RATE=$(or $(RATE),0.25) SEEDS="$(or $(SEEDS),1)" scripts/chaos
soak:    ## an hour of mixed traffic, with memory and latency every minute: make soak MINUTES=60
	scripts/soak --minutes $(or $(MINUTES),60)
