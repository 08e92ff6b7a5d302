//! The configuration the demo writes beside its data: `mesh.yaml` (with
//! freshly hashed demo passwords), the policy files and token key, and one
//! ODCS data contract per product.

use std::path::Path;

use anyhow::{Context, Result};

use crate::postgres::supply_from_postgres;
use crate::{DEMO_USERS, S3Target};

/// The demo's data contracts (ODCS v3.2), one per product. `sales.lineitem`
/// has a rule the data breaks and `supply.part` promises a column the data
/// lacks, so that users see a failing quality check and schema drift.
const CONTRACTS: &[(&str, &str)] = &[
    ("sales/orders", include_str!("../contracts/sales.orders.odcs.yaml")),
    ("sales/lineitem", include_str!("../contracts/sales.lineitem.odcs.yaml")),
    ("customers/customer", include_str!("../contracts/customers.customer.odcs.yaml")),
    ("customers/nation", include_str!("../contracts/customers.nation.odcs.yaml")),
    ("customers/region", include_str!("../contracts/customers.region.odcs.yaml")),
    ("supply/part", include_str!("../contracts/supply.part.odcs.yaml")),
    ("supply/supplier", include_str!("../contracts/supply.supplier.odcs.yaml")),
    ("supply/partsupp", include_str!("../contracts/supply.partsupp.odcs.yaml")),
];

/// Writes each contract beside its product's data (`sales/orders.odcs.yaml`
/// next to `sales/orders/`), where the engine finds it.
pub(crate) fn write_contracts(dir: &Path) -> Result<()> {
    for (product, text) in CONTRACTS {
        let path = dir.join(format!("{product}.odcs.yaml"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Writes the demo's policies: a mesh-wide file, the CRM domain's own file and
/// a random key for keyed tokens.
pub(crate) fn write_policies(dir: &Path) -> Result<()> {
    let key_file = dir.join("token.key");
    if !key_file.exists() {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no OS random source for the token key: {e}"))?;
        std::fs::write(&key_file, hex::encode(key)).with_context(|| format!("cannot write {}", key_file.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    std::fs::write(dir.join("policies.yaml"), GLOBAL_POLICIES).context("cannot write policies.yaml")?;
    std::fs::write(dir.join("customers/policies.yaml"), CUSTOMERS_POLICIES)
        .context("cannot write customers/policies.yaml")?;
    Ok(())
}

/// The demo's mesh-wide policies. See docs/governance.md for a walk-through.
const GLOBAL_POLICIES: &str = r#"# Mesh-wide policies of the Agora demo mesh (docs/governance.md walks through them).
# Everything not granted here or in a domain's own policy file is denied.

# Admins read everything unmasked and see the whole audit log. `local` is the
# operator running `agora query` on this machine without --as.
admins:
  groups: [admins]
  users: [local]

# Keyed tokens (mask type `token`) use this secret: the same value gives the
# same token in every domain, so tokenised keys still join.
token_key_file: token.key

# Columns tagged `contact` (tags are set in each domain's policy file) show only
# their last 4 characters, except to the CRM support group.
tag_rules:
  - id: contact-last-4
    tag: contact
    mask: { type: last_n, n: 4 }
    except: { groups: [crm-support] }

grants:
  - id: analysts-sales
    to: { groups: [analysts] }
    domain: sales
    masks:
      o_custkey: { type: token }
  - id: analysts-supply
    to: { groups: [analysts] }
    domain: supply
"#;

/// The CRM domain's own policies, kept next to its products.
const CUSTOMERS_POLICIES: &str = r#"# Policies of the customers domain, owned by the CRM team.
owners:
  groups: [crm-team]

# Column classification: tag rules in the mesh-wide file act on these tags.
tags:
  customer:
    c_phone: [pii, contact]
    c_address: [pii]
    c_name: [pii]

grants:
  # Analysts see their own region's customers, without account balances, with
  # customer keys as tokens (joinable with sales.orders.o_custkey, which is
  # tokenised with the same key) and phone numbers masked by the tag rule.
  # Names are tokens too: "Customer#000000042" spells the key out, and a token
  # hides a key only when no visible column encodes it.
  - id: analysts-customers-own-region
    to: { groups: [analysts] }
    product: customer
    except_columns: [c_acctbal]
    row_filter: "c_region = ${principal.region}"
    masks:
      c_custkey: { type: token }
      c_name: { type: token }
  - id: analysts-reference-data
    to: { groups: [analysts] }
    product: nation
  - id: analysts-regions
    to: { groups: [analysts] }
    product: region
"#;

/// The demo mesh's configuration with freshly hashed demo passwords.
pub(crate) fn mesh_yaml(postgres: Option<&url::Url>, s3: Option<&S3Target>) -> Result<String> {
    let mut users = String::from("auth:\n  token_ttl_seconds: 28800\n  users:\n");
    for (name, password, _) in DEMO_USERS {
        let hash = agora_engine::identity::hash_password(password)
            .map_err(|e| anyhow::anyhow!("cannot hash a demo password: {e}"))?;
        let (groups, attributes) = match *name {
            "admin" => ("[admins]", "{}"),
            _ => ("[analysts]", "{ region: EUROPE }"),
        };
        users.push_str(&format!("    - name: {name}\n      password_hash: \"{hash}\"\n      groups: {groups}\n      attributes: {attributes}\n"));
    }
    let domains = match postgres {
        Some(url) => {
            let start = MESH_YAML.find("  - name: supply").context("demo mesh has no supply domain")?;
            format!("{}{}", &MESH_YAML[..start], supply_from_postgres(url)?)
        }
        None => MESH_YAML.to_string(),
    };
    let domains = match s3 {
        Some(target) => {
            let start = domains.find("  - name: sales").context("demo mesh has no sales domain")?;
            let end = domains.find("  - name: customers").context("demo mesh has no customers domain")?;
            format!("{}{}{}", &domains[..start], target.sales_yaml(), &domains[end..])
        }
        None => domains,
    };
    Ok(format!(
        "{domains}\n{users}\ngovernance:\n  policies: policies.yaml\n  audit: {{ path: audit/audit.jsonl }}\n\
         # Each query's OpenLineage events (START, COMPLETE/FAIL); or url: http://…/api/v1/lineage\n\
         lineage: {{ path: lineage/events.jsonl }}\n"
    ))
}

/// The demo mesh's domains, with relative locations.
const MESH_YAML: &str = r#"# The Agora demo mesh: TPC-H data split into three business domains.
# Locations are relative to this file. See docs/configuration.md.
domains:
  - name: sales
    description: Customer orders and their line items, as booked by the sales organisation.
    owner: { name: Sales Analytics, contact: sales-data@example.com }
    products:
      - name: orders
        description: One row per customer order, with status, total price and priority. Partitioned by order year.
        tags: [gold, transactional]
        source: { kind: parquet, location: sales/orders }
      - name: lineitem
        description: "One row per order line: part, supplier, quantity, price, discount, tax and shipping dates."
        tags: [gold, transactional]
        source: { kind: parquet, location: sales/lineitem }

  - name: customers
    description: Who buys from us and where they are, kept by the CRM team as Delta tables.
    owner: { name: CRM Team, contact: crm@example.com }
    policies: customers/policies.yaml
    products:
      - name: customer
        description: Customer master data with market segment and account balance. Contains personal data.
        tags: [pii]
        source: { kind: delta, location: customers/customer }
      - name: nation
        description: The 25 nations customers and suppliers are located in.
        tags: [reference]
        source: { kind: delta, location: customers/nation }
      - name: region
        description: The 5 world regions nations belong to.
        tags: [reference]
        source: { kind: delta, location: customers/region }

  - name: supply
    description: Parts we sell and the suppliers who provide them.
    owner: { name: Procurement, contact: procurement@example.com }
    products:
      - name: part
        description: The parts catalogue with brand, type, size and retail price.
        source: { kind: parquet, location: supply/part }
      - name: supplier
        description: Suppliers with their nation and account balance.
        source: { kind: parquet, location: supply/supplier }
      - name: partsupp
        description: Which supplier offers which part, at what cost and with how much stock.
        source: { kind: parquet, location: supply/partsupp }
"#;
