// Azure Cosmos DB for NoSQL, serverless (billed per request and per GB stored, nothing per hour), keys
// disabled. The database and the `customers` container (partition key /id, labkit/store.py) are
// created here, because Entra ID data-plane roles cannot create them. Cosmos DB's data-plane roles are
// its own (sqlRoleDefinitions / sqlRoleAssignments), not Azure RBAC: the app reads (Built-in Data
// Reader), the learner loads the data (Built-in Data Contributor).

@description('Name of the account (globally unique, lower case)')
param name string

@description('Region')
param location string

@description('Tags')
param tags object = {}

@description('Database name (AZURE_COSMOS_DATABASE)')
param databaseName string

@description('Principal id of the app\'s managed identity')
param appPrincipalId string

@description('Object id of the signed-in learner; empty: no learner role')
param userPrincipalId string = ''

var roles = loadJsonContent('../roles.json')
var containerName = 'customers'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource customers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
      }
    }
  }
}

resource appDataReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(account.id, appPrincipalId, roles.cosmosDbBuiltInDataReader.id)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${roles.cosmosDbBuiltInDataReader.id}'
    principalId: appPrincipalId
    scope: account.id
  }
}

// after the app's: Cosmos DB refuses concurrent role-assignment writes on one account
resource userDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = if (!empty(userPrincipalId)) {
  parent: account
  name: guid(account.id, userPrincipalId, roles.cosmosDbBuiltInDataContributor.id)
  dependsOn: [
    appDataReader
  ]
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${roles.cosmosDbBuiltInDataContributor.id}'
    principalId: userPrincipalId
    scope: account.id
  }
}

output name string = account.name
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
output containerName string = customers.name
